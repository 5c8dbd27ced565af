#!/usr/bin/env bash
# gpu-stack guest phase 'burn-in': scripts/guest/burn-in.sh with its parameters (render/guest_scripts.py)
set -euo pipefail
export GS_BURNIN_JOBS=burnin-gpu-1-0-dcgm
export GS_BURNIN_MANIFEST='{"apiVersion":"v1","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"gpu-stack-burnin"}},{"apiVersion":"batch/v1","kind":"Job","metadata":{"labels":{"app.kubernetes.io/name":"gpu-stack-burnin","gpu-stack.io/burn-in-node":"gpu-1-0"},"name":"burnin-gpu-1-0-dcgm","namespace":"gpu-stack-burnin"},"spec":{"activeDeadlineSeconds":1800,"backoffLimit":0,"template":{"metadata":{"labels":{"app.kubernetes.io/name":"gpu-stack-burnin","gpu-stack.io/burn-in-node":"gpu-1-0"}},"spec":{"containers":[{"command":["bash","-c","echo '"'"'--- gpus ---'"'"'\nnvidia-smi --query-gpu=index,uuid,pci.bus_id --format=csv,noheader\necho '"'"'--- p2p ---'"'"'\nnvidia-smi topo -p2p r\necho '"'"'--- dcgm ---'"'"'\nnv-hostengine >/dev/null 2>&1 || true\ndcgmi diag -r 2\necho \"--- end $? ---\""],"image":"nvcr.io/nvidia/cloud-native/dcgm:4.6.0-1-ubuntu24.04","name":"dcgm","resources":{"limits":{"nvidia.com/gpu":"4"}}}],"nodeSelector":{"kubernetes.io/hostname":"gpu-1-0"},"restartPolicy":"Never","runtimeClassName":"nvidia","tolerations":[{"effect":"NoSchedule","key":"nvidia.com/gpu","operator":"Exists"},{"effect":"NoSchedule","key":"node.kubernetes.io/unschedulable","operator":"Exists"}]}}}}],"kind":"List"}'
export GS_BURNIN_MODE=upgrade
export GS_BURNIN_NAMESPACE=gpu-stack-burnin
export GS_EXPECTED_BUSBW=''
export GS_EXPECTED_ORIGIN='n/a: burnIn.nccl is false'
export GS_GATE_INTERVAL=5
export GS_GATE_TIMEOUT=1800
export GS_KUBECONFIG_STDIN=0
export GS_MIN_FRACTION=0.8
export GS_NODE_NAME=gpu-1-0
export GS_OWN_NAMESPACES='gpu-stack-burnin gpu-stack-smoke'
export GS_P2P_REQUIRED=0
export GS_PHASE=burn-in

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
# Atomic: the content goes to a temporary file in the same directory (mktemp
# creates it 0600, so credentials are never readable by others), gets the final
# mode and is flushed, then rename(2) replaces PATH in one step. An interrupted
# write leaves PATH as it was, never truncated. The temporary name starts with a
# dot and has no extension, so no *.conf/*.list/*.toml directory glob reads it.
write_file() {
  local path="$GS_ROOT$1" mode="$2" dir tmp
  dir=$(dirname "$path")
  mkdir -p "$dir"
  tmp=$(mktemp "$dir/.gpu-stack.XXXXXXXX")
  if ! cat >"$tmp"; then
    rm -f "$tmp"
    die "could not write the content of $1"
  fi
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return 1
  fi
  chmod "$mode" "$tmp"
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$path"
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

# The package lock at first boot. Ubuntu cloud images start apt-daily and
# apt-daily-upgrade (unattended-upgrades) right after boot (the timers are
# Persistent), so a plain apt-get fails with "Could not get lock
# /var/lib/dpkg/lock-frontend". Every apt-get waits for the lock instead
# (APT option DPkg::Lock::Timeout, apt >= 1.9.11, see apt.conf(5) and
# apt-get(8)), and the first install of a phase holds the timers off until the
# verify phase starts them again (pkg_timers_resume). DPkg::Lock::Timeout
# covers the dpkg lock only, not the lists lock `apt-get update` takes, so a
# running apt-daily.service (which is `apt-get update`) is waited for first.
# dnf waits on its own lock by itself (dnf/lock.py: "Waiting for process with
# pid N to finish", unless exit_on_lock is set in dnf.conf(5));
# dnf-makecache.timer is held off the same way.
GS_PKG_LOCK_TIMEOUT="${GS_PKG_LOCK_TIMEOUT:-900}"
PKG_TIMERS_UBUNTU="apt-daily.timer apt-daily-upgrade.timer"
PKG_TIMERS_RHEL="dnf-makecache.timer"
pkg_timers() { if [ "$(os_id)" = ubuntu ]; then echo "$PKG_TIMERS_UBUNTU"; else echo "$PKG_TIMERS_RHEL"; fi; }

apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=${GS_PKG_LOCK_TIMEOUT}" "$@"
}

pkg_timers_held=0
pkg_timers_hold() {
  [ "$pkg_timers_held" = 0 ] || return 0
  pkg_timers_held=1
  local t
  # shellcheck disable=SC2046  # a word list
  for t in $(pkg_timers); do
    if unit_running "$t"; then
      systemctl stop "$t"
      log "holding off ${t} during bootstrap"
    fi
  done
  [ "$(os_id)" = ubuntu ] && wait_unit_inactive apt-daily.service
  return 0
}

# unit_state UNIT: the unit's ActiveState: active, reloading, inactive, failed,
# activating, deactivating, maintenance (refreshing from systemd 257); a unit
# that does not exist reads inactive. Not `systemctl is-active --quiet`: its
# exit status is 0 only for active, reloading and refreshing
# (src/systemctl/systemctl-is-active.c), so a Type=oneshot unit whose
# ExecStart is still running, which stays "activating" until the command exits
# (systemd.service(5), Type=oneshot), reads as not running. systemd 252:
# systemctl(1) is-active, org.freedesktop.systemd1(5) ActiveState.
unit_state() { systemctl show -p ActiveState --value "$1" 2>/dev/null || true; }

# unit_running UNIT: UNIT is started, starting, stopping or reloading: not settled as stopped.
unit_running() {
  case "$(unit_state "$1")" in
    active|reloading|refreshing|activating|deactivating) return 0 ;;
    *) return 1 ;;
  esac
}

# unit_started UNIT: UNIT is active or on its way there (a start job is running).
unit_started() {
  case "$(unit_state "$1")" in
    active|reloading|refreshing|activating) return 0 ;;
    *) return 1 ;;
  esac
}

# wait_unit_inactive UNIT: wait (up to the lock timeout) for a running UNIT to finish.
wait_unit_inactive() {
  local waited=0 step="${GS_POLL_SECONDS:-2}"
  while unit_running "$1"; do
    [ "$waited" -lt "$GS_PKG_LOCK_TIMEOUT" ] || die "$1 is still $(unit_state "$1") after ${GS_PKG_LOCK_TIMEOUT}s; it holds the package lists lock"
    [ "$waited" -gt 0 ] || log "waiting for $1 to finish ($(unit_state "$1"))"
    sleep "$step"
    waited=$((waited + ${step%.*} + 1))
  done
}

# pkg_timers_resume: start the timers again once bootstrap is done (verify phase).
pkg_timers_resume() {
  local t
  # shellcheck disable=SC2046  # a word list
  for t in $(pkg_timers); do
    if systemctl is-enabled --quiet "$t" 2>/dev/null && ! unit_started "$t"; then
      systemctl start "$t"
      log "resumed ${t}"
    fi
  done
}

apt_updated=0
pkg_install() {
  [ "$#" -gt 0 ] || return 0
  pkg_timers_hold
  if [ "$(os_id)" = ubuntu ]; then
    if [ "$apt_updated" = 0 ]; then
      apt_get update -qq
      apt_updated=1
    fi
    apt_get install -y -qq --allow-downgrades --allow-change-held-packages "$@"
  else
    dnf install -y -q "$@"
  fi
  changed "installed $*"
}

# apt_package_exists NAME: the archive has NAME (after one apt-get update).
apt_package_exists() {
  if [ "$apt_updated" = 0 ]; then
    pkg_timers_hold
    apt_get update -qq
    apt_updated=1
  fi
  [ -n "$(apt-cache show --no-all-versions "$1" 2>/dev/null | grep '^Package: ' || true)" ]
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
      # entries read NAME-EPOCH:VERSION-RELEASE.*: the digit after NAME- keeps nvidia-driver
      # from matching a lock on nvidia-driver-cuda
      grep -q "^$p-[0-9]" <<<"$(dnf versionlock list 2>/dev/null || true)" || { dnf versionlock add "$p" >/dev/null; changed "locked $p"; }
    done
  fi
}

service_enable_now() {
  local unit="$1"
  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null || ! unit_started "$unit"; then
    systemctl enable --now "$unit"
    changed "enabled $unit"
  fi
}

module_loaded() { awk -v m="$1" '$1 == m {found = 1} END {exit !found}' <<<"$(lsmod)"; }

# reboot_now MESSAGE: the one way a phase reboots the guest. The reboot is 5 s
# away so this phase can still report; sshd stops now, so the next connection
# (the component's wait for SSH, with the pinned host key) reaches the new boot;
# GPU_STACK_REBOOT=1 on stdout tells the component; the phase ends here.
reboot_now() {
  log "$1"
  systemd-run --on-active=5 --unit=gpu-stack-reboot systemctl reboot
  systemctl stop ssh.socket ssh.service sshd.service 2>/dev/null || true
  echo "GPU_STACK_REBOOT=1"
  exit 0
}

# use_cluster_kubeconfig: point kubectl at the cluster for the phases that run
# kubectl on the stack's first VM (readiness, drain, uncordon). With
# GS_KUBECONFIG_STDIN=1 (modes join/existing) the kubeconfig arrives on stdin
# (gpu-stack:kubeconfig, never in the script or the logs) and lives in a
# temporary file removed on exit; else the node's own admin.conf (mode init).
# $1: GS_KUBECONFIG_STDIN.
use_cluster_kubeconfig() {
  if [ "$1" = 1 ]; then
    cluster_kubeconfig=$(mktemp)
    trap 'rm -f "$cluster_kubeconfig"' EXIT
    cat >"$cluster_kubeconfig"
    [ -s "$cluster_kubeconfig" ] || die "no kubeconfig arrived on stdin"
  else
    cluster_kubeconfig="$GS_ROOT/etc/kubernetes/admin.conf"
    [ -s "$cluster_kubeconfig" ] || die "no /etc/kubernetes/admin.conf on this node: kubeadm init has not run"
  fi
  export KUBECONFIG="$cluster_kubeconfig"
}

# --- day 2: what the upgrade path rolls out (docs/OPERATIONS.md, Upgrading) ---------------
# upgrade-check compares the node's installed and loaded versions with the
# configured ones and records the decision twice: in ROLLOUT_FILE on the node
# (the node's own upgrade steps read it) and in the node's ROLLOUT_ANNOTATION
# (drain and uncordon, which run kubectl on the first VM, read it). "none":
# nothing to roll out (a gpu-stack release changed only its scripts), so no
# cordon, no drain, no package change, no reboot, no uncordon. Anything else
# names what changes ("driver 570.172.08->570.195.03; ..."). drain records in
# CORDON_ANNOTATION that it, not an admin, cordoned the node; uncordon
# uncordons only such a node, then resets both to "none".
ROLLOUT_FILE=/var/lib/gpu-stack/upgrade/rollout
# shellcheck disable=SC2034  # read by upgrade-check, drain and uncordon, inlined after this library
ROLLOUT_ANNOTATION=gpu-stack.io/rollout
# shellcheck disable=SC2034  # read by drain and uncordon
CORDON_ANNOTATION=gpu-stack.io/cordoned

# node_annotation NODE KEY: the annotation's value, empty when the node has none (kubectl's
# -o jsonpath allows missing keys; a dot in the key is escaped, kubernetes#31984). Fails when the
# API server does not answer.
node_annotation() { kubectl get node "$1" -o jsonpath="{.metadata.annotations.${2//./\\.}}"; }

# rollout_pending: this node has something to roll out, or nothing recorded says otherwise.
rollout_pending() { [ "$(cat "$GS_ROOT$ROLLOUT_FILE" 2>/dev/null || true)" != none ]; }

# --- drift: the plan recorded on the Node (docs/OPERATIONS.md, Drift) ---------------------
# gpu-stack.io/expected-{driver,fabricmanager,toolkit,kubernetes}: the versions this node is
# meant to run; gpu-stack.io/gpu-uuids: its GPUs as UUID@PCI-address (the guest's), comma-
# separated. upgrade-check writes the versions from the config each time it runs; the
# bootstrap's verify writes what it has just installed and verified, and the GPUs, only where
# the node has no record yet, so that a later re-run of verify never records a drifted node
# as planned. The doctor (doctor/diagnosis.py NODE_ANNOTATIONS) and the optional in-cluster
# drift check compare the node with them.
# shellcheck disable=SC2034  # read by upgrade-check, verify and verify-cpu, inlined after this library
EXPECTED_ANNOTATION=gpu-stack.io/expected-
# shellcheck disable=SC2034  # read by verify
GPU_UUIDS_ANNOTATION=gpu-stack.io/gpu-uuids

# record_on_node overwrite|absent KEY=VALUE...: set each annotation of this node (GS_NODE_NAME)
# with the kubelet's own credentials (NodeRestriction allows a node its own annotations) where
# it differs: `overwrite` replaces another value, `absent` writes only keys the node lacks. An
# empty VALUE is skipped. Returns 1, changing nothing more, when the API server does not answer.
record_on_node() {
  local mode="$1" kv key value current
  shift
  export KUBECONFIG="$GS_ROOT/etc/kubernetes/kubelet.conf"
  [ -s "$KUBECONFIG" ] || return 1
  for kv in "$@"; do
    key="${kv%%=*}"
    value="${kv#*=}"
    [ -n "$value" ] || continue
    current=$(node_annotation "$GS_NODE_NAME" "$key") || return 1
    [ "$current" != "$value" ] || continue
    [ "$mode" = overwrite ] || [ -z "$current" ] || continue
    kubectl annotate --overwrite node "$GS_NODE_NAME" "${key}=${value}" >/dev/null || return 1
    changed "annotated ${key}=${value}"
  done
}

# --- package repositories ---------------------------------------------------------------
# Vendor repositories are added by the phase that installs from them, each with its signing key
# from the same base URL (the vendor's, or a mirror laid out the same way); the preflight phase
# checks beforehand that each answers (repo_check). gpu-stack guests are x86_64 (the driver
# runfile is NVIDIA-Linux-x86_64), which Debian calls amd64.
REPO_ARCH=x86_64
REPO_DEB_ARCH=amd64

# Credentials (scripts/guest/credentials.sh writes them, root-only; docs/OPERATIONS.md, Proxy and
# mirror credentials): read here only where guest.proxy.username / guest.repositoryUsername are set.
PROXY_ENV=/etc/gpu-stack/proxy.env
REPO_NETRC=/etc/gpu-stack/netrc

# proxy_for http|https: the proxy for URLs of that scheme, as apt and dnf use it (os-prep.sh), with
# the proxy's credentials when guest.proxy.username is set. Never printed: see shown_proxy.
proxy_for() {
  local var=HTTP_PROXY plain="${GS_HTTP_PROXY:-${GS_HTTPS_PROXY:-}}"
  if [ "$1" = https ]; then var=HTTPS_PROXY; plain="${GS_HTTPS_PROXY:-${GS_HTTP_PROXY:-}}"; fi
  if [ -n "$plain" ] && [ -n "${GS_PROXY_USER:-}" ]; then
    [ -f "$GS_ROOT$PROXY_ENV" ] || die "guest.proxy.username is set but ${PROXY_ENV} is missing: phase credentials has not run"
    sed -n "s/^${var}=//p" "$GS_ROOT$PROXY_ENV"
  else
    printf '%s' "$plain"
  fi
}

# shown_proxy URL: what may be printed of a proxy URL: without its user:password@.
shown_proxy() { printf '%s' "$1" | sed -E 's#://[^/@]*@#://***@#'; }

# repo_proxy URL: the proxy apt and dnf use for URL, as os-prep.sh configures them
# (Acquire::http::Proxy / Acquire::https::Proxy, dnf.conf proxy=), so a check sees what they see.
repo_proxy() {
  case "$1" in
    https://*) proxy_for https ;;
    *) proxy_for http ;;
  esac
}

# repo_fetch URL [CURL ARGS...]: curl -fsSL through that proxy (an empty one is no proxy), with the
# mirrors' credentials from REPO_NETRC where guest.repositoryUsername is set (hosts without a line
# there get none). The proxy reaches curl in its environment, never on its command line.
repo_fetch() {
  local url="$1" proxy auth=()
  shift
  proxy=$(repo_proxy "$url")
  if [ -n "${GS_REPO_USER:-}" ] && [ -f "$GS_ROOT$REPO_NETRC" ]; then
    auth=(--netrc-optional --netrc-file "$GS_ROOT$REPO_NETRC")
  fi
  https_proxy="$proxy" http_proxy="$proxy" curl -fsSL "${auth[@]}" "$@" "$url"
}

# repo_auth BASE: dnf's username= and password= lines ([repo] options, dnf.conf(5)) for a mirror
# guest.repositoryUsername covers (a line for its host in REPO_NETRC), else nothing.
repo_auth() {
  [ -n "${GS_REPO_USER:-}" ] && [ -f "$GS_ROOT$REPO_NETRC" ] || return 0
  local host="${1#*://}"
  host="${host%%/*}"
  awk -v m="${host%:*}" '$1 == "machine" && $2 == m {printf "username=%s\npassword=%s\n", $4, $6; exit}' "$GS_ROOT$REPO_NETRC"
}

# repo_key URL KEYRING WHAT: a repository's signing key, fetched and dearmored into KEYRING once,
# the form of Docker's, Kubernetes' and NVIDIA's install guides (curl -fsSL URL | gpg --dearmor -o KEYRING).
repo_key() {
  local url="$1" keyring="$2"
  [ ! -s "$GS_ROOT$keyring" ] || return 0
  mkdir -p "$(dirname "$GS_ROOT$keyring")"
  rm -f "$GS_ROOT$keyring"  # an empty leftover: gpg -o asks before overwriting
  repo_fetch "$url" | gpg --dearmor -o "$GS_ROOT$keyring"
  changed "$3"
}

# repo_source PATH < content: an apt source or dnf .repo file; a changed source makes the next
# install run `apt-get update` again (pkg_install), so the packages it adds are seen.
# repo_source PATH [BASE] < content: with BASE, a dnf .repo for a mirror guest.repositoryUsername
# covers gets repo_auth's lines after each baseurl= and is written 0600 (it then holds a password).
repo_source() {
  local auth
  auth=$(if [ -n "${2:-}" ]; then repo_auth "$2"; fi)
  if [ -z "$auth" ]; then
    if write_file "$1" 0644; then apt_updated=0; fi
  elif awk -v auth="$auth" '{print} /^baseurl=/ {print auth}' | write_file "$1" 0600; then
    apt_updated=0
  fi
}

# ubuntu_codename: the release's codename (Docker's suites), from os-release.
ubuntu_codename() {
  local codename
  # shellcheck source=/dev/null  # the guest's os-release
  codename=$(. "$GS_ROOT/etc/os-release" && printf '%s' "${VERSION_CODENAME:-${UBUNTU_CODENAME:-}}")
  if [ -z "$codename" ]; then
    case "$(os_version)" in
      22.04) codename=jammy ;;
      24.04) codename=noble ;;
      *) die "cannot tell the Ubuntu codename (no VERSION_CODENAME in /etc/os-release)" ;;
    esac
  fi
  printf '%s' "$codename"
}

# docker_el_path: rhel on RHEL, centos for the rebuilds (Rocky, Alma), Docker's EL directories.
docker_el_path() {
  # shellcheck source=/dev/null  # the guest's os-release
  if [ "$(. "$GS_ROOT/etc/os-release" && printf '%s' "${ID:-}")" = rhel ]; then echo rhel; else echo centos; fi
}

# cuda_distro: the directory of NVIDIA's CUDA repository for this release (CUDA Installation Guide
# for Linux, network repositories: <distro> is ubuntu2204, ubuntu2404, rhel9).
cuda_distro() {
  if [ "$(os_id)" = ubuntu ]; then
    local v
    v=$(os_version)
    echo "ubuntu${v//./}"
  else
    echo "rhel$(os_version | cut -d. -f1)"
  fi
}

# repo_index KIND BASE: the file apt or dnf reads first from a repository, at the layout the
# phases write (apt: the suite's InRelease; dnf: repodata/repomd.xml). KIND: docker,
# kubernetes, nvidia-container-toolkit, cuda.
repo_index() {
  local base="$2"
  case "$1:$(os_id)" in
    docker:ubuntu) echo "${base}/ubuntu/dists/$(ubuntu_codename)/InRelease" ;;
    docker:rhel) echo "${base}/$(docker_el_path)/$(os_version | cut -d. -f1)/${REPO_ARCH}/stable/repodata/repomd.xml" ;;
    kubernetes:ubuntu) echo "${base}/deb/InRelease" ;;
    kubernetes:rhel) echo "${base}/rpm/repodata/repomd.xml" ;;
    nvidia-container-toolkit:ubuntu) echo "${base}/stable/deb/${REPO_DEB_ARCH}/InRelease" ;;
    nvidia-container-toolkit:rhel) echo "${base}/stable/rpm/${REPO_ARCH}/repodata/repomd.xml" ;;
    cuda:ubuntu) echo "${base}/$(cuda_distro)/${REPO_ARCH}/InRelease" ;;
    cuda:rhel) echo "${base}/$(cuda_distro)/${REPO_ARCH}/repodata/repomd.xml" ;;
    *) die "no repository layout for $1 on $(os_id)" ;;
  esac
}

# repo_check NAME KEY KIND BASE: the repository answers (its index, through the package
# managers' proxy), else one line naming it and its config key. apt reads Release (with
# Release.gpg) where a repository has no InRelease, so that is tried too.
repo_check() {
  local name="$1" key="$2" index err
  index=$(repo_index "$3" "$4")
  err=$(repo_fetch "$index" -o /dev/null 2>&1) && return 0
  if [ "${index##*/}" = InRelease ] && repo_fetch "${index%/InRelease}/Release" -o /dev/null >/dev/null 2>&1; then
    return 0
  fi
  local proxy
  proxy=$(shown_proxy "$(repo_proxy "$index")")
  die "${name} repository does not answer at ${index} (${err%%$'\n'*}) through ${proxy:-no proxy}: set ${key} to a reachable mirror or fix the proxy (guest.proxy)"
}

# nvidia_container_toolkit_repository BASE: NVIDIA's libnvidia-container repository, as the
# Container Toolkit install guide (NVIDIA/cloud-native-docs container-toolkit/install-guide.md at
# tag container-toolkit-v1.17.8, unchanged at commit 52dcb7b8 where versions1.json prefers 1.20.0) adds it: apt: `curl -fsSL <base>/gpgkey | gpg --dearmor -o
# /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg`, then <base>/stable/deb/nvidia-container-toolkit.list
# through `sed 's#deb https://#deb [signed-by=...] https://#g'` into
# /etc/apt/sources.list.d/nvidia-container-toolkit.list; dnf: <base>/stable/rpm/nvidia-container-toolkit.repo
# into /etc/yum.repos.d/nvidia-container-toolkit.repo. Both files are written here as the
# vendor's (tests/reference/libnvidia-container-ghpages-*) with BASE for the vendor URL, so a mirror
# needs only the packages and the key, not rewritten files.
nvidia_container_toolkit_repository() {
  local base="$1"
  if [ "$(os_id)" = ubuntu ]; then
    local keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
    repo_key "${base}/gpgkey" "$keyring" "NVIDIA Container Toolkit apt key"
    repo_source /etc/apt/sources.list.d/nvidia-container-toolkit.list <<CONF
deb [signed-by=${keyring}] ${base}/stable/deb/\$(ARCH) /
#deb [signed-by=${keyring}] ${base}/experimental/deb/\$(ARCH) /
CONF
  else
    repo_source /etc/yum.repos.d/nvidia-container-toolkit.repo "$base" <<CONF
[nvidia-container-toolkit]
name=nvidia-container-toolkit
baseurl=${base}/stable/rpm/\$basearch
repo_gpgcheck=1
gpgcheck=0
enabled=1
gpgkey=${base}/gpgkey
sslverify=1
sslcacert=/etc/pki/tls/certs/ca-bundle.crt

[nvidia-container-toolkit-experimental]
name=nvidia-container-toolkit-experimental
baseurl=${base}/experimental/rpm/\$basearch
repo_gpgcheck=1
gpgcheck=0
enabled=0
gpgkey=${base}/gpgkey
sslverify=1
sslcacert=/etc/pki/tls/certs/ca-bundle.crt
CONF
  fi
}

# cuda_repository BASE: NVIDIA's CUDA network repository for this release (CUDA Installation
# Guide for Linux, network repository installation). Ubuntu: the cuda-keyring_1.1-1_all.deb
# package from <base>/<distro>/x86_64/, which installs /usr/share/keyrings/cuda-archive-keyring.gpg
# and /etc/apt/sources.list.d/cuda-<distro>-x86_64.list (the guide installs it with `dpkg -i`;
# apt-get installs the same file and waits for the dpkg lock, see apt_get); that source is
# written again with BASE, identical to the package's for the vendor URL, pointing at the mirror
# for a mirror. EL: the guide's `dnf config-manager --add-repo <base>/rhel9/x86_64/cuda-rhel9.repo`
# stores that file as /etc/yum.repos.d/cuda-rhel9.repo; it is written here with the same
# content (repository id cuda-rhel9-x86_64, gpgkey D42D0685.pub beside it, as copied in public
# repositories: the file itself could not be read), so a mirror's key comes from the mirror.
cuda_repository() {
  local distro url
  distro=$(cuda_distro)
  url="$1/${distro}/${REPO_ARCH}"
  if [ "$(os_id)" = ubuntu ]; then
    if ! pkg_installed cuda-keyring; then
      local deb=/var/cache/gpu-stack/cuda-keyring_1.1-1_all.deb
      mkdir -p "$GS_ROOT/var/cache/gpu-stack"
      repo_fetch "${url}/cuda-keyring_1.1-1_all.deb" -o "$GS_ROOT$deb"
      pkg_timers_hold
      apt_get install -y -qq "$GS_ROOT$deb"
      changed "installed cuda-keyring (CUDA repository key)"
    fi
    repo_source "/etc/apt/sources.list.d/cuda-${distro}-${REPO_ARCH}.list" <<CONF
deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] ${url}/ /
CONF
  else
    repo_source "/etc/yum.repos.d/cuda-${distro}.repo" "$url" <<CONF
[cuda-${distro}-${REPO_ARCH}]
name=cuda-${distro}-${REPO_ARCH}
baseurl=${url}
enabled=1
gpgcheck=1
gpgkey=${url}/D42D0685.pub
CONF
  fi
}

# kubernetes_repository: the kubeadm/kubelet/kubectl repository of the
# configured minor (GS_K8S_REPO, pkgs.k8s.io layout), pinned to GS_K8S_VERSION
# on Ubuntu; shared by the kubernetes phase and upgrade-kubernetes.
# $1: GS_K8S_REPO, $2: GS_K8S_VERSION.
kubernetes_repository() {
  local repo="$1" version="$2"
  local minor="${version%.*}"
  if [ "$(os_id)" = ubuntu ]; then
    local keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
    repo_key "${repo}/deb/Release.key" "$keyring" "Kubernetes apt key"
    repo_source /etc/apt/sources.list.d/kubernetes.list <<CONF
deb [signed-by=${keyring}] ${repo}/deb/ /
CONF
    write_file /etc/apt/preferences.d/gpu-stack-kubernetes 0644 <<CONF || true
Package: kubeadm kubelet kubectl
Pin: version ${version}-*
Pin-Priority: 1001
CONF
  else
    repo_source /etc/yum.repos.d/kubernetes.repo "$repo" <<CONF
[kubernetes]
name=Kubernetes ${minor}
baseurl=${repo}/rpm/
enabled=1
gpgcheck=1
gpgkey=${repo}/rpm/repodata/repomd.xml.key
CONF
  fi
}

# shellcheck shell=bash
# Phase: burn-in (issue 27; runs kubectl on the stack's first VM). The gate before a GPU node takes work:
# its burn-in Jobs (render/k8s_manifests.burnin_jobs: DCGM diagnostics, `nvidia-smi topo -p2p r`, an NCCL
# all-reduce over all its GPUs) run on it while it is cordoned, and it is uncordoned only when all pass.
# GS_BURNIN_MODE deploy: the first deploy, after the readiness gate; the node is cordoned here (recorded
# in CORDON_ANNOTATION, as drain does) and uncordoned here on success. GS_BURNIN_MODE upgrade: an upgrade
# wave, after upgrade-verify and before uncordon; drain cordoned the node, and nothing runs when
# upgrade-check found nothing to roll out. On any failure the node stays cordoned (and keeps its taints),
# the command fails, later waves do not start, and the message names the node, the GPU (index, UUID, PCI
# address) or link, the failing test and what diagnoses it. The same verdict, from the same output, is
# computed by render/burnin.evaluate for the `burnIn` stack output (tests/test_guest_scripts.py runs both
# on the real captures). Prints each Job's output under `--- burn-in <job> ---`.
use_cluster_kubeconfig "$GS_KUBECONFIG_STDIN"
node="$GS_NODE_NAME"
ns="$GS_BURNIN_NAMESPACE"
deadline=$(( $(date +%s) + GS_GATE_TIMEOUT ))
BURNIN_ANNOTATION=gpu-stack.io/burn-in

if [ "$GS_BURNIN_MODE" = upgrade ]; then
  rollout=$(node_annotation "$node" "$ROLLOUT_ANNOTATION") \
    || die "node ${node}, phase burn-in: the API server does not answer; seed 003 step 1: kubectl get nodes"
  if [ "$rollout" = none ]; then
    log "nothing was rolled out on ${node}: no burn-in"
    echo "--- burn-in ---"
    echo "node ${node} skipped (nothing rolled out)"
    exit 0
  fi
else
  # A node that already runs GPU pods (other than gpu-stack's own: GS_OWN_NAMESPACES) is serving: a fleet that upgrades gpu-stack to the release that brought
  # the gate gets this phase as a new resource on nodes that carry work. Its Jobs could not get the node's GPUs,
  # and a cordon would take it out of service for no change, so it is left alone; it burns in at its next
  # upgrade wave. (--field-selector spec.nodeName and status.phase are pod field selectors; a map printed by
  # jsonpath is its JSON: kubectl's reference, "JSONPath Support".)
  busy=$(kubectl get pods -A --field-selector "spec.nodeName=${node},status.phase=Running" \
           -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.spec.containers[*].resources.requests}{"\n"}{end}') \
    || die "node ${node}, phase burn-in: the API server does not answer; seed 003 step 1: kubectl get nodes"
  if awk -v own=" ${GS_OWN_NAMESPACES} " 'index(own, " " $1 " ") == 0 && /nvidia\.com\//' <<<"$busy" | grep -q .; then
    log "${node} already runs GPU pods: no burn-in now, it burns in at its next upgrade wave"
    echo "--- burn-in ---"
    echo "node ${node} skipped (already serving)"
    exit 0
  fi
  if [ "$(kubectl get node "$node" -o jsonpath='{.spec.unschedulable}' 2>/dev/null || true)" != true ]; then
    # the record first (drain.sh): a run that stops between the two never leaves a cordon it cannot release
    kubectl annotate --overwrite node "$node" "${CORDON_ANNOTATION}=true" >/dev/null
    kubectl cordon "$node" >/dev/null
    changed "cordoned ${node} for its burn-in"
  fi
fi
kubectl annotate --overwrite node "$node" "${BURNIN_ANNOTATION}=running" >/dev/null

# the previous run's Jobs go first: a Job's pod template cannot change, and its old logs must not count
kubectl -n "$ns" delete job -l "gpu-stack.io/burn-in-node=${node}" --ignore-not-found --wait=true >/dev/null 2>&1 || true
printf '%s\n' "$GS_BURNIN_MANIFEST" | kubectl apply -f - >/dev/null \
  || die "node ${node}, phase burn-in: kubectl apply of the burn-in Jobs failed; it stays cordoned"

job_state() { kubectl -n "$ns" get job "$1" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' 2>/dev/null || true; }
failures=()
fail() { failures+=("${node}: $*"); }

# gpu_label INDEX: "GPU i (UUID, PCI address)" from the dcgm Job's inventory, or "GPU i".
inventory=""
gpu_label() {
  local line
  line=$(awk -F', *' -v i="$1" '$1 == i { print $2 " " $3; exit }' <<<"$inventory")
  if [ -n "$line" ]; then printf 'GPU %s (%s, %s)' "$1" "${line%% *}" "${line#* }"; else printf 'GPU %s' "$1"; fi
}
section() { awk -v s="--- $1 ---" '$0 == s { on = 1; next } /^--- .* ---$/ { on = 0 } on' <<<"$2"; }

DIAG_GPU="doctor guest driver section; seed 003 §0 step 2 (driver health: nvidia-smi, dmesg Xid)"
DIAG_FM="doctor guest driver: Fabric Manager active and fabric state (CUDA 'system not yet initialized'); seed 003 §0 step 2"
DIAG_BW="doctor guest driver: NVLink and fabric state; nvidia-smi topo -m in the guest (seed 003 §0 step 2)"
DIAG_P2P="doctor hypervisor checks (ACS, IOMMU groups) and guest driver: NVLink; nvidia-smi topo -p2p r and topo -m in the guest"

for job in $GS_BURNIN_JOBS; do
  until grep -qE '(^| )(Complete|Failed) ' <<<"$(job_state "$job") "; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail "burn-in Job ${ns}/${job} did not finish in ${GS_GATE_TIMEOUT}s (burnIn.timeoutSeconds); seed 003 step 3 (pod events):" \
        "kubectl -n ${ns} describe pod -l job-name=${job} (Insufficient GPUs: something else holds them)"
      break
    fi
    sleep "$GS_GATE_INTERVAL"
  done
  out=$(kubectl -n "$ns" logs "job/${job}" 2>&1 || true)
  echo "--- burn-in ${job} ---"
  printf '%s\n' "$out"
  if [ -n "$(section gpus "$out")" ]; then inventory=$(section gpus "$out"); fi

  if grep -qxF -- '--- dcgm ---' <<<"$out"; then
    dcgm=$(section dcgm "$out")
    if ! grep -q '^| Diagnostic' <<<"$dcgm"; then
      fail "dcgmi diag printed no result table ($(grep -m1 . <<<"$dcgm" || echo 'no output')); ${DIAG_GPU}"
    else
      # a result row: the name cell, then a result cell starting with Fail; DCGM 4.x also prints `GPUn: Fail` lines
      while IFS='|' read -r _ name result _; do
        name=$(sed 's/^ *//; s/ *$//' <<<"$name")
        # its Warning/Error rows, the hard-wrapped cells rejoined (DCGM wraps at 45 characters, render/burnin.py)
        text=$(awk -v n="$name" 'index($0, "| " n " ") == 1 { on = 1; next }
          on && /^\| [A-Za-z]/ { if ($0 ~ /^\| (Warning|Error) /) { w = 1 } else if ($0 ~ /^\| Info /) { w = 0 } else exit }
          on && w { printf "%s", substr($0, 31, 45) }' <<<"$dcgm")
        gpus=$(grep -oE 'GPU [0-9]+' <<<"$text" | awk '{ print $2 }' | sort -un | tr '\n' ' ')
        where="all GPUs"
        if [ -n "$gpus" ] && ! grep -q 'Fail - All' <<<"$result"; then
          where=""
          for g in $gpus; do where="${where:+${where}, }$(gpu_label "$g")"; done
        fi
        diag="$DIAG_GPU"
        grep -q 'not yet initialized\|cuInit' <<<"$text" && diag="$DIAG_FM"
        grep -qi 'persistence' <<<"$name" && diag="doctor guest driver: persistence mode; seed 003 §0 step 2"
        fail "${where}: dcgmi diag \`${name}\` Fail; ${diag}"
      done < <(grep -E '^\| [^|]*[^ |][^|]*\| Fail' <<<"$dcgm")
      while read -r g; do
        fail "$(gpu_label "$g"): dcgmi diag Fail (per-GPU line); ${DIAG_GPU}"
      done < <(grep -oE 'GPU[0-9]+: Fail' <<<"$dcgm" | sed 's/^GPU//; s/: Fail$//')
    fi
    if [ "$GS_P2P_REQUIRED" = 1 ]; then
      # the `topo -p2p r` matrix: every cell off the diagonal must be OK on a node whose GPUs the host wires by NVLink
      bad=$(section p2p "$out" | awk '$1 ~ /^GPU[0-9]+$/ && $2 !~ /^GPU/ && NF > 2 {
          rows++; for (j = 2; j <= NF; j++) if ($j != "X" && $j != "OK") { print $1, "GPU" j - 2, $j; n++ } }
        END { if (!rows) print "none" }')
      if [ "$bad" = none ]; then
        fail "nvidia-smi topo -p2p r printed no matrix; ${DIAG_P2P}"
      elif [ -n "$bad" ]; then
        read -r a b status <<<"$(head -n1 <<<"$bad")"
        fail "link $(gpu_label "${a#GPU}") -> $(gpu_label "${b#GPU}"): P2P read ${status} ($(wc -l <<<"$bad") GPU pairs not OK;" \
          "CNS: ACS or no ATS in the guest, TNS: the guest's PCIe topology, NS: NVLink or Fabric Manager); ${DIAG_P2P}"
      fi
    fi
  fi

  if grep -qxF -- '--- nccl ---' <<<"$out"; then
    nccl=$(section nccl "$out")
    err=$(grep -m1 -E 'Test (CUDA |NCCL )?failure|NCCL WARN' <<<"$nccl" || true)
    # nccl-tests v2.19.6 src/util.cu: the header names the columns; the busbw of the LARGEST size, out of place
    read -r size busbw wrong <<<"$(awk '
      /^ *#/ && /busbw/ && /size/ {
        sub(/^ *# */, ""); b = 0; w1 = 0; w2 = 0
        for (i = 1; i <= NF; i++) { if ($i == "busbw" && !b) b = i; if ($i == "#wrong") { if (!w1) w1 = i; else if (!w2) w2 = i } }
        cols = NF; next
      }
      cols && $1 ~ /^[0-9]+$/ && NF >= cols {
        if ($1 + 0 >= max) { max = $1 + 0; size = $1; bw = $b }
        if (w1 && $w1 ~ /^[0-9]+$/) bad += $w1
        if (w2 && $w2 ~ /^[0-9]+$/) bad += $w2
      }
      END { if (max) print size, bw, bad + 0 }' <<<"$nccl")"
    if [ -n "$err" ]; then
      diag="$DIAG_GPU"
      grep -q 'not yet initialized' <<<"$err" && diag="$DIAG_FM"
      fail "all_reduce_perf failed: ${err}; ${diag}"
    elif [ -z "$size" ]; then
      fail "all_reduce_perf printed no result table; ${DIAG_GPU}"
    fi
    if [ -n "$wrong" ] && [ "$wrong" != 0 ]; then
      fail "all_reduce_perf found ${wrong} wrong elements (data corruption across GPUs); ${DIAG_GPU}"
    fi
    if [ -n "$size" ] && [ -n "$GS_EXPECTED_BUSBW" ] \
        && awk -v m="$busbw" -v e="$GS_EXPECTED_BUSBW" -v f="$GS_MIN_FRACTION" 'BEGIN { exit !(m < f * e) }'; then
      fail "NVLink/PCIe fabric: all_reduce_perf busbw ${busbw} GB/s at ${size} B (the largest size) is below" \
        "${GS_MIN_FRACTION} x expected ${GS_EXPECTED_BUSBW} GB/s (${GS_EXPECTED_ORIGIN}); ${DIAG_BW}"
    fi
    if [ "$GS_P2P_REQUIRED" = 1 ]; then
      shm=$(grep -E 'NCCL INFO Channel [0-9/]+ : [0-9]+\[[0-9]+\] -> [0-9]+\[[0-9]+\].* via SHM/' <<<"$nccl" || true)
      if [ -n "$shm" ]; then
        read -r src dst <<<"$(sed -E 's/.* : [0-9]+\[([0-9]+)\] -> [0-9]+\[([0-9]+)\].*/\1 \2/' <<<"$(head -n1 <<<"$shm")")"
        fail "link $(gpu_label "$src") -> $(gpu_label "$dst"): NCCL chose SHM instead of P2P ($(wc -l <<<"$shm") channels): P2P is off in the guest; ${DIAG_P2P}"
      fi
    fi
  fi
  case " $(job_state "$job") " in
    *" Failed "*) [ "${#failures[@]}" -gt 0 ] || fail "burn-in Job ${ns}/${job} failed; seed 003 step 3 (pod events): kubectl -n ${ns} describe pod -l job-name=${job}" ;;
  esac
done

echo "--- burn-in ---"
if [ "${#failures[@]}" -gt 0 ]; then
  kubectl annotate --overwrite node "$node" "${BURNIN_ANNOTATION}=failed" >/dev/null || true
  kubectl label --overwrite node "$node" "${BURNIN_ANNOTATION}=failed" >/dev/null || true
  printf 'FAIL %s\n' "${failures[@]}"
  die "node ${node} failed its burn-in and stays cordoned (and keeps its taints):" \
    "${failures[0]}$([ "${#failures[@]}" -gt 1 ] && printf ' (and %d more above)' $(( ${#failures[@]} - 1 ))). Fix it, then run pulumi up again;" \
    "docs/OPERATIONS.md, Burn-in"
fi
kubectl annotate --overwrite node "$node" "${BURNIN_ANNOTATION}=passed" >/dev/null
kubectl label --overwrite node "$node" "${BURNIN_ANNOTATION}=passed" >/dev/null
echo "PASS node ${node}"
if [ "$GS_BURNIN_MODE" = deploy ] && [ -n "$(node_annotation "$node" "$CORDON_ANNOTATION" 2>/dev/null || true)" ]; then
  kubectl uncordon "$node" >/dev/null
  kubectl annotate node "$node" "${CORDON_ANNOTATION}-" >/dev/null
  changed "uncordoned ${node}: burn-in passed"
fi
