#!/usr/bin/env bash
# gpu-stack guest phase 'drain': scripts/guest/drain.sh with its parameters (render/guest_scripts.py)
set -euo pipefail
export GS_CONTROL_PLANE=0
export GS_DRAIN_TIMEOUT=900
export GS_K8S_VERSION=1.32.4
export GS_KUBECONFIG_STDIN=0
export GS_NODE_NAME=gpu-1-1
export GS_PHASE=drain

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
# Upgrade phase: drain (runs kubectl on the stack's first VM). Cordons the
# node, then drains it through the eviction API, so PodDisruptionBudgets are
# respected; never --force, never --disable-eviction. When the drain does not
# finish within GS_DRAIN_TIMEOUT seconds the command fails: the node stays
# cordoned and Pulumi starts nothing that depends on it (later waves).
# A node that is not the control plane is only drained for a Kubernetes change
# once the API server runs that minor (kubelet must never be newer).
if [ "$GS_KUBECONFIG_STDIN" = 1 ]; then
  kubeconfig=$(mktemp)
  trap 'rm -f "$kubeconfig"' EXIT
  cat >"$kubeconfig"
  [ -s "$kubeconfig" ] || die "no kubeconfig arrived on stdin"
else
  kubeconfig="$GS_ROOT/etc/kubernetes/admin.conf"
  [ -s "$kubeconfig" ] || die "no /etc/kubernetes/admin.conf on this node: kubeadm init has not run"
fi
export KUBECONFIG="$kubeconfig"
node="$GS_NODE_NAME"

if [ -n "$GS_K8S_VERSION" ] && [ "$GS_CONTROL_PLANE" != 1 ]; then
  server=$(kubectl version -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"v\([0-9.]*\).*/\1/p' | tail -n1)
  want_minor="${GS_K8S_VERSION%.*}"
  if [ -n "$server" ]; then
    newest=$(printf '%s\n%s\n' "${server%.*}" "$want_minor" | sort -V | tail -n1)
    [ "$newest" = "${server%.*}" ] || die "node ${node}, phase drain: the API server runs ${server}, older than kubernetes.version ${GS_K8S_VERSION}; the control plane is upgraded first (wave 0): see its upgrade-kubernetes output"
  fi
fi

if [ "$(kubectl get node "$node" -o jsonpath='{.spec.unschedulable}' 2>/dev/null || true)" != true ]; then
  kubectl cordon "$node" >/dev/null
  changed "cordoned ${node}"
fi
if ! kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --timeout="${GS_DRAIN_TIMEOUT}s" >/dev/null; then
  die "node ${node}, phase drain: the drain did not finish in ${GS_DRAIN_TIMEOUT}s (fleet.drainTimeoutSeconds). ${node} stays cordoned and later waves do not start. Seed 003 step 3 (pod events): kubectl get pdb -A (a PodDisruptionBudget that allows no disruption), kubectl get pods -A -o wide --field-selector spec.nodeName=${node} (a pod no controller owns is never forced off). Fix it, then run pulumi up again"
fi
changed "drained ${node}"
log "done"
