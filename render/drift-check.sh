#!/bin/sh
# gpu-stack drift check (addons.monitoring.driftCheck; render/drift_check.py, docs/OPERATIONS.md, Drift).
# One pod per GPU node (a DaemonSet). Every DRIFT_INTERVAL seconds it compares what the node runs with
# what gpu-stack recorded on its Node object (the gpu-stack.io/expected-* and gpu-uuids annotations,
# scripts/guest/lib.sh record_on_node) and writes gpu_stack_node_drift into METRICS, which busybox
# httpd serves to Prometheus (the PodMonitor next to the DaemonSet). POSIX sh as busybox ash runs it.
#   the Node: DRIFT_API/api/v1/nodes/NODE_NAME (the kubectl proxy sidecar, read-only RBAC: get nodes)
#   loaded driver: HOST/sys/module/nvidia/version (what upgrade-check reads)
#   packages: HOST/var/lib/dpkg/status (DRIFT_FAMILY ubuntu; DRIFT_FM_PACKAGE: the Fabric Manager package
#     names of the stack's NVSwitch VMs). On EL the rpm database is not readable without the host's rpm
#     (and its root), so Fabric Manager, the toolkit and kubeadm are left to gpu-stack doctor there.
#   GPUs: PROC/driver/nvidia/gpus/<bus>/information ("GPU UUID:" and "Bus Location:" lines)
set -u
HOST="${DRIFT_HOST:-/host}"
PROC="${DRIFT_PROC:-/proc}"
API="${DRIFT_API:-http://127.0.0.1:8001}"
METRICS="${DRIFT_METRICS:-/www/metrics.txt}"

# annotation JSON KEY: the value of "KEY": "VALUE" in the Node's pretty-printed JSON (managedFields
# name keys "f:KEY", so they do not match)
annotation() { printf '%s\n' "$1" | sed -n "s|^ *\"$2\": \"\([^\"]*\)\",\{0,1\}\$|\1|p" | head -n 1; }

# pkg NAME: the installed upstream version (packaging revision and epoch dropped), empty when not installed
pkg() {
  awk -v p="$1" '
    /^Package: / { name = $2; ok = 0; ver = "" }
    /^Status: / && / installed$/ { ok = 1 }
    /^Version: / { ver = $2 }
    /^$/ { if (name == p && ok && ver != "") { print ver; found = 1; exit } name = "" }
    END { if (!found && name == p && ok && ver != "") print ver }' "$HOST/var/lib/dpkg/status" | sed 's/^[0-9]*://; s/-[^-]*$//' | head -n 1
}

# gpus_now: UUID@bus (0000:0d:00.0) of each GPU the driver sees, sorted
gpus_now() {
  for f in "$PROC"/driver/nvidia/gpus/*/information; do
    [ -r "$f" ] || continue
    awk -F ':[ \t]*' '/^GPU UUID/ { u = $2 } /^Bus Location/ { b = $0; sub(/^Bus Location:[ \t]*/, "", b) } END { print u "@" tolower(b) }' "$f"
  done | sort
}

# gpus_recorded ANNOTATION: the same from gpu-stack.io/gpu-uuids (nvidia-smi's 00000000:0D:00.0 -> 0000:0d:00.0)
gpus_recorded() {
  printf '%s\n' "$1" | tr ',' '\n' | awk -F '@' 'NF == 2 { b = tolower($2); if (length(b) == 16) b = substr(b, 5); print $1 "@" b }' | sort
}

series() { printf 'gpu_stack_node_drift{node="%s",component="%s",expected="%s",actual="%s"} %s\n' "$NODE_NAME" "$1" "$2" "$3" "$4"; }

# compare COMPONENT EXPECTED ACTUAL: one series; nothing when nothing was recorded
compare() {
  [ -n "$2" ] || return 0
  if [ "$2" = "$3" ]; then series "$1" "$2" "$3" 0; else series "$1" "$2" "${3:-none}" 1; fi
}

check_once() {
  node=$(wget -q -O - "$API/api/v1/nodes/$NODE_NAME?pretty=true") || { echo "drift-check: cannot read node $NODE_NAME from $API" >&2; return 1; }
  kubelet=$(printf '%s\n' "$node" | sed -n 's/^ *"kubeletVersion": "v\{0,1\}\([^"]*\)",\{0,1\}$/\1/p' | head -n 1)
  driver=$(cat "$HOST/sys/module/nvidia/version" 2>/dev/null || true)
  fm_pkg="${DRIFT_FM_PACKAGE:-}"
  {
    echo "# HELP gpu_stack_node_drift 1 where the node runs another version, or other GPUs, than gpu-stack recorded on its Node (gpu-stack.io/expected-*, gpu-stack.io/gpu-uuids); 0 where they match."
    echo "# TYPE gpu_stack_node_drift gauge"
    compare driver "$(annotation "$node" gpu-stack.io/expected-driver)" "$driver"
    compare kubelet "$(annotation "$node" gpu-stack.io/expected-kubernetes)" "$kubelet"
    if [ "$DRIFT_FAMILY" = ubuntu ]; then
      fm=""
      for p in $fm_pkg; do fm=$(pkg "$p"); [ -z "$fm" ] || break; done
      compare fabricmanager "$(annotation "$node" gpu-stack.io/expected-fabricmanager)" "$fm"
      compare toolkit "$(annotation "$node" gpu-stack.io/expected-toolkit)" "$(pkg nvidia-container-toolkit)"
      compare kubeadm "$(annotation "$node" gpu-stack.io/expected-kubernetes)" "$(pkg kubeadm)"
    fi
    recorded=$(annotation "$node" gpu-stack.io/gpu-uuids)
    if [ -n "$recorded" ]; then
      # expected: the GPUs recorded; actual: how many of them are still there, each with its UUID at its address
      want=$(gpus_recorded "$recorded")
      have=$(gpus_now)
      found=0
      for g in $want; do
        if printf '%s\n' "$have" | grep -qxF "$g"; then found=$((found + 1)); fi
      done
      compare gpus "$(printf '%s\n' "$want" | grep -c .)" "$found"
    fi
    echo "# HELP gpu_stack_drift_check_last_run_timestamp_seconds When the drift check last compared this node."
    echo "# TYPE gpu_stack_drift_check_last_run_timestamp_seconds gauge"
    printf 'gpu_stack_drift_check_last_run_timestamp_seconds{node="%s"} %s\n' "$NODE_NAME" "$(date +%s)"
  } >"$METRICS.tmp" && mv "$METRICS.tmp" "$METRICS"
}

if [ "${DRIFT_ONCE:-0}" = 1 ]; then
  check_once
  exit
fi
mkdir -p "$(dirname "$METRICS")"
httpd -p "${DRIFT_PORT:-9410}" -h "$(dirname "$METRICS")"
while :; do
  check_once || true
  sleep "${DRIFT_INTERVAL:-300}"
done
