# shellcheck shell=bash
# Phase: readiness (a gate after the add-ons, on the first VM). Waits, bounded by
# GS_GATE_TIMEOUT seconds in all, until every node is Ready, its GPU resource's
# allocatable equals the count the config passes through (times the time-slicing
# replicas), and the smoke-test Job has succeeded. A failure names the step of
# seed 003's ten-minute diagnosis (docs/OPERATIONS.md) that explains it. Prints
# what it found; render/readiness.py parses it into the `readiness` stack output.
# Reads only: it never changes the cluster.
use_cluster_kubeconfig "$GS_KUBECONFIG_STDIN"
deadline=$(( $(date +%s) + GS_GATE_TIMEOUT ))
resource_path="${GS_GPU_RESOURCE//./\\.}"

# wait_for DESCRIPTION COMMAND...: poll until COMMAND succeeds or the gate's deadline passes.
wait_for() {
  local what="$1"
  shift
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "gave up waiting for ${what} after ${GS_GATE_TIMEOUT}s"
      return 1
    fi
    sleep "$GS_GATE_INTERVAL"
  done
}

node_ready() {
  [ "$(kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)" = True ]
}
allocatable() { kubectl get node "$1" -o jsonpath="{.status.allocatable.${resource_path}}" 2>/dev/null || true; }
allocatable_is() { [ "$(allocatable "$1")" = "$2" ]; }

report=()
for entry in $GS_GATE_NODES; do
  node="${entry%%=*}"
  want="${entry#*=}"
  if ! wait_for "node ${node} Ready" node_ready "$node"; then
    die "node ${node} is not Ready. Seed 003 step 1 (components and resources ready): kubectl describe node" \
        "${node}; 'cni plugin not initialized' or 'network plugin is not ready' means the pod network is not" \
        "running (kubectl -n calico-system get pods, kubectl -n tigera-operator logs deploy/tigera-operator)"
  fi
  if ! wait_for "${GS_GPU_RESOURCE} on ${node}" allocatable_is "$node" "$want"; then
    have=$(allocatable "$node")
    if [ -z "$have" ] || [ "$have" = 0 ]; then
      die "node ${node} has no allocatable ${GS_GPU_RESOURCE} (expected ${want}). Seed 003 step 4 (plugin logs and" \
          "registration): ${GS_PLUGIN_LOGS}; then step 1: kubectl get node ${node} -o jsonpath='{.status.allocatable}'"
    fi
    die "node ${node} has ${have} allocatable ${GS_GPU_RESOURCE}, the config expects ${want}. Seed 003 step 2 (driver" \
        "health): nvidia-smi -L on ${node} and dmesg | grep -i xid; step 5 (MIG, time-slicing): the plugin's sharing config"
  fi
  report+=("node ${node} Ready ${GS_GPU_RESOURCE}=$(allocatable "$node")/${want}")
done

if [ -n "$GS_SMOKE_JOB" ]; then
  job_state() {
    kubectl -n "$GS_SMOKE_NAMESPACE" get job "$GS_SMOKE_JOB" \
      -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' 2>/dev/null || true
  }
  job_done() { grep -qE '(^| )(Complete|Failed) ' <<<"$(job_state) "; }
  wait_for "job ${GS_SMOKE_NAMESPACE}/${GS_SMOKE_JOB}" job_done || true
  state=$(job_state)
  case " $state " in
    *" Complete "*) report+=("job ${GS_SMOKE_NAMESPACE}/${GS_SMOKE_JOB} Succeeded") ;;
    *" Failed "*) die "the smoke-test Job ${GS_SMOKE_NAMESPACE}/${GS_SMOKE_JOB} failed. Seed 003 step 3 (pod events): kubectl -n" \
        "${GS_SMOKE_NAMESPACE} describe pod -l job-name=${GS_SMOKE_JOB}; kubectl -n ${GS_SMOKE_NAMESPACE} logs job/${GS_SMOKE_JOB}" ;;
    *) die "the smoke-test Job ${GS_SMOKE_NAMESPACE}/${GS_SMOKE_JOB} did not finish in ${GS_GATE_TIMEOUT}s." \
        "Seed 003 step 3 (pod events): kubectl -n ${GS_SMOKE_NAMESPACE} describe pod -l job-name=${GS_SMOKE_JOB}" \
        "(Insufficient ${GS_GPU_RESOURCE}, an untolerated taint, a missing runtimeClassName)" ;;
  esac
fi
echo "--- readiness ---"
printf '%s\n' "${report[@]}"
