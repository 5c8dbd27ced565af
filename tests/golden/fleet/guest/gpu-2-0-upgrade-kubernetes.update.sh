#!/usr/bin/env bash
# gpu-stack guest phase 'upgrade-kubernetes': scripts/guest/upgrade-kubernetes.sh with its parameters (render/guest_scripts.py)
set -euo pipefail
export GS_CONTROL_PLANE=0
export GS_HTTPS_PROXY=''
export GS_K8S_CA_HASH=''
export GS_K8S_ENDPOINT=''
export GS_K8S_REPO=https://pkgs.k8s.io/core:/stable:/v1.32
export GS_K8S_ROLE=join
export GS_K8S_VERSION=1.32.4
export GS_NODE_LABELS=nvidia.com/gpu.present=true
export GS_NODE_NAME=gpu-2-0
export GS_NODE_TAINTS=''
export GS_PHASE=upgrade-kubernetes
export GS_POD_CIDR=10.244.0.0/16
export GS_RUNTIME=containerd
export GS_UNLOCK='kubeadm=1.32.4 kubelet=1.32.4 kubectl=1.32.4'
export GS_UPGRADE=1

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
# Upgrade prelude (EL): dnf's versionlock keeps a locked package at its version,
# so a package whose configured version differs from the installed one is
# unlocked first; the phase below installs it pinned and locks it again.
# Ubuntu needs nothing: pkg_install allows changing held packages.
# GS_UNLOCK: "name=version ..." as configured.
if [ "$(os_id)" = rhel ] && [ -n "${GS_UNLOCK:-}" ]; then
  unlock_locked=$(dnf versionlock list 2>/dev/null || true)
  for unlock_entry in $GS_UNLOCK; do
    unlock_name="${unlock_entry%%=*}"
    unlock_want="${unlock_entry#*=}"
    grep -q "^${unlock_name}-" <<<"$unlock_locked" || continue
    case "$(pkg_version "$unlock_name")" in
      "$unlock_want"|"$unlock_want"-*|"$unlock_want".*) ;;
      *) dnf versionlock delete "$unlock_name" >/dev/null; changed "unlocked ${unlock_name} for ${unlock_want}" ;;
    esac
  done
fi

# shellcheck shell=bash
# Upgrade phase: upgrade-kubernetes (on a drained node), the kubeadm way, one
# minor at a time (upgrade-check refused the rest): the repository of the
# configured minor, kubeadm pinned, then on the control plane `kubeadm upgrade
# plan` and `kubeadm upgrade apply`, on every other node `kubeadm upgrade node`,
# then kubelet and kubectl pinned and a kubelet restart. kubernetes.sh follows
# (inlined after this) and finds the packages converged: it only re-applies
# labels, taints and the bootstrap token.
family=$(os_id)
minor="${GS_K8S_VERSION%.*}"
# the bootstrap token (stdin) is for kubernetes.sh below: keep it from the
# package manager and kubeadm, and hand it back just before kubernetes.sh
IFS= read -r upgrade_token || true
exec </dev/null
k8s_is() { case "$(pkg_version "$1")" in "$GS_K8S_VERSION"|"$GS_K8S_VERSION"-*) return 0 ;; *) return 1 ;; esac; }

# the same repository files kubernetes.sh writes, for the configured minor
if [ "$family" = ubuntu ]; then
  keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
  if [ ! -s "$GS_ROOT$keyring" ]; then
    mkdir -p "$GS_ROOT/etc/apt/keyrings"
    https_proxy="${GS_HTTPS_PROXY}" curl -fsSL "${GS_K8S_REPO}/deb/Release.key" | gpg --dearmor -o "$GS_ROOT$keyring"
    changed "Kubernetes apt key"
  fi
  write_file /etc/apt/sources.list.d/kubernetes.list 0644 <<CONF || true
deb [signed-by=${keyring}] ${GS_K8S_REPO}/deb/ /
CONF
  write_file /etc/apt/preferences.d/gpu-stack-kubernetes 0644 <<CONF || true
Package: kubeadm kubelet kubectl
Pin: version ${GS_K8S_VERSION}-*
Pin-Priority: 1001
CONF
  kubeadm_pkg=(kubeadm)
  node_pkgs=(kubelet kubectl)
else
  write_file /etc/yum.repos.d/kubernetes.repo 0644 <<CONF || true
[kubernetes]
name=Kubernetes ${minor}
baseurl=${GS_K8S_REPO}/rpm/
enabled=1
gpgcheck=1
gpgkey=${GS_K8S_REPO}/rpm/repodata/repomd.xml.key
CONF
  kubeadm_pkg=("kubeadm-${GS_K8S_VERSION}")
  node_pkgs=("kubelet-${GS_K8S_VERSION}" "kubectl-${GS_K8S_VERSION}")
fi

apiserver_version() {
  sed -n 's/.*kube-apiserver:v\([0-9][0-9.]*\).*/\1/p' "$GS_ROOT/etc/kubernetes/manifests/kube-apiserver.yaml" 2>/dev/null | head -n1
}

if k8s_is kubelet && k8s_is kubectl && k8s_is kubeadm && { [ "$GS_CONTROL_PLANE" != 1 ] || [ "$(apiserver_version)" = "$GS_K8S_VERSION" ]; }; then
  log "Kubernetes ${GS_K8S_VERSION} is installed and running here"
else
  k8s_is kubeadm || pkg_install "${kubeadm_pkg[@]}"
  export KUBECONFIG="$GS_ROOT/etc/kubernetes/admin.conf"
  if [ "$GS_CONTROL_PLANE" = 1 ]; then
    if [ "$(apiserver_version)" != "$GS_K8S_VERSION" ]; then
      kubeadm upgrade plan "v${GS_K8S_VERSION}" >/dev/null \
        || die "node ${GS_NODE_NAME}, phase upgrade-kubernetes: kubeadm upgrade plan v${GS_K8S_VERSION} refused; run it on ${GS_NODE_NAME} to see why (seed 003 step 1: kubectl get nodes, kubectl -n kube-system get pods)"
      kubeadm upgrade apply -y "v${GS_K8S_VERSION}" >/dev/null \
        || die "node ${GS_NODE_NAME}, phase upgrade-kubernetes: kubeadm upgrade apply v${GS_K8S_VERSION} failed; kubeadm rolls a failed control-plane upgrade back: see /var/log/syslog and kubectl -n kube-system get pods (seed 003 step 1)"
      changed "kubeadm upgrade apply v${GS_K8S_VERSION}"
    fi
  else
    kubeadm upgrade node >/dev/null \
      || die "node ${GS_NODE_NAME}, phase upgrade-kubernetes: kubeadm upgrade node failed (seed 003 step 1: journalctl -u kubelet on ${GS_NODE_NAME})"
    changed "kubeadm upgrade node"
  fi
  pkg_install "${node_pkgs[@]}"
  systemctl daemon-reload
  systemctl restart kubelet
  changed "kubelet ${GS_K8S_VERSION} restarted"
fi
exec < <(printf '%s\n' "$upgrade_token")
unset upgrade_token

# shellcheck shell=bash
# Phase: kubernetes. kubeadm, kubelet and kubectl pinned and held, then
# role init (single control plane, its taint removed) or role join (token and
# CA hash; never the unsafe skip). A node that has joined is not re-joined.
# The bootstrap token arrives on stdin, never in the script or the logs.
family=$(os_id)
minor="${GS_K8S_VERSION%.*}"
IFS= read -r token || true
[ -n "$token" ] || die "no bootstrap token arrived on stdin"

if [ "$family" = ubuntu ]; then
  keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
  if [ ! -s "$GS_ROOT$keyring" ]; then
    mkdir -p "$GS_ROOT/etc/apt/keyrings"
    https_proxy="${GS_HTTPS_PROXY}" curl -fsSL "${GS_K8S_REPO}/deb/Release.key" | gpg --dearmor -o "$GS_ROOT$keyring"
    changed "Kubernetes apt key"
  fi
  write_file /etc/apt/sources.list.d/kubernetes.list 0644 <<CONF || true
deb [signed-by=${keyring}] ${GS_K8S_REPO}/deb/ /
CONF
  write_file /etc/apt/preferences.d/gpu-stack-kubernetes 0644 <<CONF || true
Package: kubeadm kubelet kubectl
Pin: version ${GS_K8S_VERSION}-*
Pin-Priority: 1001
CONF
  pkgs=(kubeadm kubelet kubectl)
else
  write_file /etc/yum.repos.d/kubernetes.repo 0644 <<CONF || true
[kubernetes]
name=Kubernetes ${minor}
baseurl=${GS_K8S_REPO}/rpm/
enabled=1
gpgcheck=1
gpgkey=${GS_K8S_REPO}/rpm/repodata/repomd.xml.key
CONF
  pkgs=("kubeadm-${GS_K8S_VERSION}" "kubelet-${GS_K8S_VERSION}" "kubectl-${GS_K8S_VERSION}")
fi
case "$(pkg_version kubeadm)" in
  "${GS_K8S_VERSION}"|"${GS_K8S_VERSION}"-*) ;;
  *) pkg_install "${pkgs[@]}" ;;
esac
pkg_hold kubeadm kubelet kubectl
systemctl is-enabled --quiet kubelet 2>/dev/null || { systemctl enable kubelet; changed "kubelet enabled"; }

case "$GS_RUNTIME" in
  containerd) cri=unix:///run/containerd/containerd.sock ;;
  docker) cri=unix:///var/run/dockershim.sock ;;
esac

# Labels and taints for a node that registers itself (join): kubelet flags.
kubelet_env=/etc/default/kubelet
[ "$family" = rhel ] && kubelet_env=/etc/sysconfig/kubelet
labels="${GS_NODE_LABELS// /,}"
taints="${GS_NODE_TAINTS// /,}"
write_file "$kubelet_env" 0644 <<CONF || true
KUBELET_EXTRA_ARGS=${labels:+--node-labels=${labels}}${taints:+ --register-with-taints=${taints}}
CONF

if [ "$GS_K8S_ROLE" = init ]; then
  if [ -s "$GS_ROOT/etc/kubernetes/admin.conf" ]; then
    log "control plane already initialised"
  else
    kubeadm init --kubernetes-version "v${GS_K8S_VERSION}" --pod-network-cidr "$GS_POD_CIDR" \
      --node-name "$GS_NODE_NAME" --cri-socket "$cri" --token "$token" --token-ttl 0 >/dev/null
    changed "kubeadm init"
  fi
  export KUBECONFIG="$GS_ROOT/etc/kubernetes/admin.conf"
  # the token other nodes join with; re-created after a rotation
  if ! grep -qx "${token%%.*}\..*" <<<"$(kubeadm token list -o jsonpath='{.token}{"\n"}')"; then
    kubeadm token create "$token" --ttl 0 >/dev/null
    changed "bootstrap token created"
  fi
  current_taints=$(kubectl get node "$GS_NODE_NAME" -o go-template='{{range .spec.taints}}{{.key}}={{.value}}:{{.effect}}{{"\n"}}{{end}}')
  if grep -q '^node-role.kubernetes.io/control-plane=' <<<"$current_taints"; then
    kubectl taint node "$GS_NODE_NAME" node-role.kubernetes.io/control-plane:NoSchedule- >/dev/null
    changed "control-plane taint removed"
  fi
  # shellcheck disable=SC2016  # a Go template, not shell
  current_labels=$(kubectl get node "$GS_NODE_NAME" -o go-template='{{range $k, $v := .metadata.labels}}{{$k}}={{$v}}{{"\n"}}{{end}}')
  for label in $GS_NODE_LABELS; do
    grep -qxF "$label" <<<"$current_labels" || { kubectl label --overwrite node "$GS_NODE_NAME" "$label" >/dev/null; changed "label ${label}"; }
  done
  for taint in $GS_NODE_TAINTS; do
    grep -qxF "$taint" <<<"$current_taints" || { kubectl taint --overwrite node "$GS_NODE_NAME" "$taint" >/dev/null; changed "taint ${taint}"; }
  done
else
  if [ -s "$GS_ROOT/etc/kubernetes/kubelet.conf" ]; then
    log "already joined"
  else
    kubeadm join "$GS_K8S_ENDPOINT" --token "$token" --discovery-token-ca-cert-hash "$GS_K8S_CA_HASH" \
      --node-name "$GS_NODE_NAME" --cri-socket "$cri" >/dev/null
    changed "kubeadm join ${GS_K8S_ENDPOINT}"
  fi
fi
log "done (changed=${GS_CHANGED})"
