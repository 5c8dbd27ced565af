# shellcheck shell=bash
# Upgrade phase: uncordon (runs kubectl on the stack's first VM, after
# upgrade-verify passed). Waits, bounded by GS_GATE_TIMEOUT, until the node is
# Ready and its GPU resource is allocatable at the expected count again (the
# readiness gate's check), then uncordons it when gpu-stack's drain cordoned it
# (CORDON_ANNOTATION, lib.sh), also when that was in an earlier run that failed
# halfway; a node an admin cordoned stays cordoned. Then the node's
# ROLLOUT_ANNOTATION goes back to "none". A failure leaves it cordoned. When
# upgrade-check found nothing to roll out and gpu-stack cordoned nothing, it
# does nothing at all.
use_cluster_kubeconfig "$GS_KUBECONFIG_STDIN"
node="$GS_NODE_NAME"
deadline=$(( $(date +%s) + GS_GATE_TIMEOUT ))
resource_path="${GS_GPU_RESOURCE//./\\.}"
node_ready() { [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)" = True ]; }
allocatable() { kubectl get node "$node" -o jsonpath="{.status.allocatable.${resource_path}}" 2>/dev/null || true; }
wait_for() {
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep "$GS_GATE_INTERVAL"
  done
}
rollout=$(node_annotation "$node" "$ROLLOUT_ANNOTATION") \
  || die "node ${node}, phase uncordon: the API server does not answer; seed 003 step 1: kubectl get nodes"
ours=$(node_annotation "$node" "$CORDON_ANNOTATION")
if [ "$rollout" = none ] && [ -z "$ours" ]; then
  log "nothing was rolled out on ${node} and gpu-stack cordoned nothing: left as it is"
  echo "--- upgraded ---"
  echo "node ${node} unchanged (nothing to roll out)"
  exit 0
fi
wait_for node_ready || die "node ${node}, phase uncordon: not Ready after the upgrade (${GS_GATE_TIMEOUT}s); it stays" \
    "cordoned. Seed 003 step 1: kubectl describe node ${node}, journalctl -u kubelet on ${node}"
if [ -n "$GS_EXPECTED" ]; then
  allocatable_back() { [ "$(allocatable)" = "$GS_EXPECTED" ]; }
  wait_for allocatable_back || die "node ${node}, phase uncordon: allocatable ${GS_GPU_RESOURCE} is '$(allocatable)', expected ${GS_EXPECTED}; it" \
      "stays cordoned. Seed 003 step 4 (plugin logs and registration): ${GS_PLUGIN_LOGS}; step 2: nvidia-smi -L on ${node}"
fi
state=uncordoned
if [ -n "$ours" ]; then
  if [ "$(kubectl get node "$node" -o jsonpath='{.spec.unschedulable}' 2>/dev/null || true)" = true ]; then
    kubectl uncordon "$node" >/dev/null
    changed "uncordoned ${node}"
  fi
  # after the uncordon: a run that stops between the two leaves the record, and the next uncordon finds the node schedulable
  kubectl annotate node "$node" "${CORDON_ANNOTATION}-" >/dev/null
elif [ "$(kubectl get node "$node" -o jsonpath='{.spec.unschedulable}' 2>/dev/null || true)" = true ]; then
  state="left cordoned (cordoned before gpu-stack's drain, not by gpu-stack: kubectl uncordon ${node} when you want it back)"
  log "${node} ${state}"
fi
if [ "$rollout" != none ]; then
  kubectl annotate --overwrite node "$node" "${ROLLOUT_ANNOTATION}=none" >/dev/null
fi
echo "--- upgraded ---"
echo "node ${node} Ready ${GS_GPU_RESOURCE}=$(allocatable)/${GS_EXPECTED:-any} ${state}"
