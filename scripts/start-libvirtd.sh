#!/usr/bin/env bash
# Start virtlogd and libvirtd for the validator and engine tests, as root, when
# they are not running yet. Debian's post-install does not do this in a
# container, and no udev runs there.
#
#   scripts/start-libvirtd.sh [--record FILE]
#
# --record FILE: append the pid of each daemon this script started to FILE, so
# that the caller stops exactly those (by pid) and never a daemon that was
# running before (.ci/run does this).
#
# Without udev, /dev/kvm is root:root 0600. libvirt then probes QEMU with KVM
# off, logs "KVM was not enabled when probing ..., but it should be usable
# now" and probes again on every call, 25-50 s each, so defines time out
# (issue 9). Udev's rule on a normal host gives /dev/kvm root:kvm 0660; this
# script does the same, then checks that two capability queries in a row do
# not both re-probe, and fails fast with that message when they do.
set -euo pipefail

record=""
if [ "${1:-}" = "--record" ]; then
  record="${2:?--record needs a file}"
fi

log_file=/var/log/libvirt/gpu-stack-libvirtd.log
reprobe_pattern="KVM was .*enabled when probing"

getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm libvirt-qemu
mkdir -p /var/log/libvirt /var/lib/libvirt/qemu/nvram /run/libvirt

# What udev's 50-udev-default.rules / 65-kvm.rules leave on a host.
if [ -c /dev/kvm ]; then
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
answers() { [ -S /run/libvirt/libvirt-sock ] && virsh -c qemu:///system version >/dev/null 2>&1; }

remember() {
  # $1: pidfile the daemon wrote
  local pid
  for _ in $(seq 1 50); do
    [ -s "$1" ] && break
    sleep 0.1
  done
  pid="$(cat "$1" 2>/dev/null || true)"
  if [ -n "$record" ] && [ -n "$pid" ]; then
    echo "$pid" >>"$record"
  fi
}

if ! answers; then
  # a daemon that is still shutting down holds its pidfile; wait for it to go
  for _ in $(seq 1 50); do
    alive /run/libvirtd.pid || break
    sleep 0.2
  done
  if ! alive /run/virtlogd.pid; then
    rm -f /run/virtlogd.pid
    virtlogd -d -p /run/virtlogd.pid
    remember /run/virtlogd.pid
  fi
  rm -f /run/libvirtd.pid
  : >"$log_file"
  LIBVIRT_LOG_FILTERS="1:qemu.qemu_capabilities" \
  LIBVIRT_LOG_OUTPUTS="1:file:$log_file" \
    libvirtd -d -p /run/libvirtd.pid
  remember /run/libvirtd.pid
  up=""
  for _ in $(seq 1 100); do
    if answers; then up=1; break; fi
    sleep 0.2
  done
  if [ -z "$up" ]; then
    echo "libvirtd did not come up (log: $log_file)" >&2
    exit 1
  fi
fi

# Two capability queries: a healthy daemon has probed QEMU by now and answers
# both from its cache; one caught in the loop re-probes (and logs it) on each.
before=0
[ -r "$log_file" ] && before="$(wc -l <"$log_file")"
for _ in 1 2; do
  timeout 120 virsh -c qemu:///system domcapabilities --virttype qemu >/dev/null 2>&1 || true
done
reprobes=0
if [ -r "$log_file" ]; then
  reprobes="$(tail -n "+$((before + 1))" "$log_file" | grep -c "$reprobe_pattern" || true)"
fi
if [ "$reprobes" -ge 2 ]; then
  cat >&2 <<EOF
libvirtd re-probes QEMU on every call ($reprobes times for two queries): its log says
"KVM was not enabled when probing ..., but it should be usable now" (or the reverse).
/dev/kvm is $(stat -c '%U:%G %a' /dev/kvm 2>/dev/null || echo missing); libvirt's QEMU user must be able to
open it: udev gives it root:kvm 0660, and libvirt-qemu is in group kvm.
Each define would take 25-50 s and the tests would time out one by one. Log: $log_file
EOF
  exit 1
fi
