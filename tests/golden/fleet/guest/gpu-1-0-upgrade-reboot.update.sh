#!/usr/bin/env bash
# gpu-stack guest phase 'upgrade-reboot': scripts/guest/upgrade-reboot.sh with its parameters (render/guest_scripts.py)
set -euo pipefail
export GS_NODE_NAME=gpu-1-0
export GS_PHASE=upgrade-reboot

# shellcheck shell=bash
# gpu-stack guest library, inlined after the rendered export header of every
# phase script. Every file path goes through $GS_ROOT (empty on a real guest)
# so the tests can run the phases in a sandbox root with recording stubs.

GS_ROOT="${GS_ROOT:-}"
GS_CHANGED=0
export GS_CHANGED  # read by the phase script this library is inlined into

log() { printf '[gpu-stack %s] %s\n' "${GS_PHASE:-?}" "$*"; }
die() { printf '[gpu-stack %s] ERROR: %s\n' "${GS_PHASE:-?}" "$*" >&2; exit 1; }
changed() { GS_CHANGED=1; log "changed: $*"; }

# os_id: ubuntu or rhel, from /etc/os-release.
# shellcheck source=/dev/null  # the guest's os-release
os_id() {
  local id like
  id=$(. "$GS_ROOT/etc/os-release" && printf '%s' "${ID:-}")
  like=$(. "$GS_ROOT/etc/os-release" && printf '%s' "${ID_LIKE:-}")
  case " $id $like " in
    *" ubuntu "*|*" debian "*) echo ubuntu ;;
    *" rhel "*|*" fedora "*|*" centos "*) echo rhel ;;
    *) echo "unknown:$id" ;;
  esac
}

# shellcheck source=/dev/null
os_version() { (. "$GS_ROOT/etc/os-release" && printf '%s' "${VERSION_ID:-}"); }

# write_file PATH MODE < content: replace PATH only when the content differs.
# Returns 0 when it wrote, 1 when the file was already right.
write_file() {
  local path="$GS_ROOT$1" mode="$2" tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return 1
  fi
  mkdir -p "$(dirname "$path")"
  cp "$tmp" "$path"
  chmod "$mode" "$path"
  rm -f "$tmp"
  changed "wrote $1"
  return 0
}

pkg_installed() {
  if [ "$(os_id)" = ubuntu ]; then
    grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  else
    rpm -q "$1" >/dev/null 2>&1
  fi
}

# pkg_version NAME: the installed version, empty when not installed.
pkg_version() {
  if [ "$(os_id)" = ubuntu ]; then
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true
  else
    rpm -q --qf '%{VERSION}' "$1" 2>/dev/null || true
  fi
}

apt_updated=0
pkg_install() {
  [ "$#" -gt 0 ] || return 0
  if [ "$(os_id)" = ubuntu ]; then
    if [ "$apt_updated" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades --allow-change-held-packages "$@"
  else
    dnf install -y -q "$@"
  fi
  changed "installed $*"
}

# ensure_pkgs NAME...: install the ones that are missing.
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  pkg_install "${missing[@]}"
}

pkg_hold() {
  if [ "$(os_id)" = ubuntu ]; then
    local p
    for p in "$@"; do
      grep -qx "$p" <<<"$(apt-mark showhold)" || { apt-mark hold "$p" >/dev/null; changed "held $p"; }
    done
  else
    ensure_pkgs python3-dnf-plugin-versionlock
    local p
    for p in "$@"; do
      grep -q "^$p-" <<<"$(dnf versionlock list 2>/dev/null || true)" || { dnf versionlock add "$p" >/dev/null; changed "locked $p"; }
    done
  fi
}

service_enable_now() {
  local unit="$1"
  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null || ! systemctl is-active --quiet "$unit" 2>/dev/null; then
    systemctl enable --now "$unit"
    changed "enabled $unit"
  fi
}

module_loaded() { awk -v m="$1" '$1 == m {found = 1} END {exit !found}' <<<"$(lsmod)"; }

# shellcheck shell=bash
# Upgrade phase: upgrade-reboot (on a drained node). Reboots when the loaded
# kernel module differs from the installed one (a new driver), with sshd
# stopped first so upgrade-verify, whose connection retries with the pinned
# host key, reaches the guest only on the new boot. Otherwise nothing.
loaded=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
installed=$(modinfo -F version nvidia 2>/dev/null || true)
if [ -n "$installed" ] && [ "$loaded" != "$installed" ]; then
  log "nvidia ${loaded:-(none)} is loaded, ${installed} is installed: rebooting ${GS_NODE_NAME}"
  systemd-run --on-active=5 --unit=gpu-stack-reboot systemctl reboot
  systemctl stop ssh.socket ssh.service sshd.service 2>/dev/null || true
  echo "GPU_STACK_REBOOT=1"
  exit 0
fi
echo "GPU_STACK_REBOOT=0"
log "nvidia ${loaded:-(none)} loaded and installed: no reboot"
