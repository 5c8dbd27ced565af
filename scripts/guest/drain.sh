# shellcheck shell=bash
# Upgrade phase: drain (runs kubectl on the stack's first VM). Cordons the
# node, then drains it through the eviction API, so PodDisruptionBudgets are
# respected; never --force, never --disable-eviction. When the drain does not
# finish within GS_DRAIN_TIMEOUT seconds the command fails: the node stays
# cordoned and Pulumi starts nothing that depends on it (later waves).
# A node that is not the control plane is only drained for a Kubernetes change
# once the API server runs that minor (kubelet must never be newer).
# Nothing happens when upgrade-check found nothing to roll out (the node's
# ROLLOUT_ANNOTATION is "none", lib.sh): a gpu-stack release alone drains no
# node. When it cordons the node itself, it first records so in
# CORDON_ANNOTATION, so that uncordon releases only what gpu-stack cordoned: a
# node an admin cordoned stays cordoned. A missing or unreadable decision
# drains, as an upgrade must never run on an undrained node.
use_cluster_kubeconfig "$GS_KUBECONFIG_STDIN"
node="$GS_NODE_NAME"

rollout=$(node_annotation "$node" "$ROLLOUT_ANNOTATION" 2>/dev/null || true)
if [ "$rollout" = none ]; then
  log "upgrade-check found ${node} at the configured versions: no cordon, no drain"
  exit 0
fi
log "to roll out on ${node}: ${rollout:-unknown (no ${ROLLOUT_ANNOTATION} annotation)}"

if [ -n "$GS_K8S_VERSION" ] && [ "$GS_CONTROL_PLANE" != 1 ]; then
  version_json=$(kubectl version -o json 2>/dev/null) \
    || die "node ${node}, phase drain: the API server does not answer (kubectl version:" \
        "$(kubectl version -o json 2>&1 >/dev/null | tail -n1)); seed 003 step 1: is the control plane up (kubectl get nodes)?"
  server=$(sed -n 's/.*"gitVersion": *"v\([0-9.]*\).*/\1/p' <<<"$version_json" | tail -n1)
  want_minor="${GS_K8S_VERSION%.*}"
  if [ -n "$server" ]; then
    newest=$(printf '%s\n%s\n' "${server%.*}" "$want_minor" | sort -V | tail -n1)
    [ "$newest" = "${server%.*}" ] || die "node ${node}, phase drain: the API server runs ${server}, older than kubernetes.version" \
        "${GS_K8S_VERSION}; the control plane is upgraded first (wave 0): see its upgrade-kubernetes output"
  fi
fi

if [ "$(kubectl get node "$node" -o jsonpath='{.spec.unschedulable}' 2>/dev/null || true)" != true ]; then
  # the record first: a run that stops between the two leaves a record of a cordon that the next
  # drain makes, never a cordon without the record that lets uncordon release it
  kubectl annotate --overwrite node "$node" "${CORDON_ANNOTATION}=true" >/dev/null
  kubectl cordon "$node" >/dev/null
  changed "cordoned ${node}"
elif [ -z "$(node_annotation "$node" "$CORDON_ANNOTATION" 2>/dev/null || true)" ]; then
  log "${node} was cordoned before, not by gpu-stack: it stays cordoned after the upgrade"
fi
if ! kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --timeout="${GS_DRAIN_TIMEOUT}s" >/dev/null; then
  die "node ${node}, phase drain: the drain did not finish in ${GS_DRAIN_TIMEOUT}s (fleet.drainTimeoutSeconds). ${node} stays cordoned and later" \
      "waves do not start. Seed 003 step 3 (pod events): kubectl get pdb -A (a PodDisruptionBudget that allows no disruption), kubectl get" \
      "pods -A -o wide --field-selector spec.nodeName=${node} (a pod no controller owns is never forced off). Fix it, then run pulumi up again"
fi
changed "drained ${node}"
log "done"
