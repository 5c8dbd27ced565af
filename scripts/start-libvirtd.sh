#!/usr/bin/env bash
# Start virtlogd and libvirtd for the validator tests, as root, when they are
# not running yet. Debian's post-install does not do this in a container.
set -euo pipefail
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm libvirt-qemu
mkdir -p /var/log/libvirt /var/lib/libvirt/qemu/nvram /run/libvirt
answers() { [ -S /run/libvirt/libvirt-sock ] && virsh -c qemu:///system version >/dev/null 2>&1; }
answers && exit 0
# a daemon that is still shutting down holds its pidfile; wait for it to go
for _ in $(seq 1 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.2; done
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  answers && exit 0
  sleep 0.2
done
echo "libvirtd did not come up" >&2
exit 1
