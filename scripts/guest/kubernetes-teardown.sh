# shellcheck shell=bash
# Delete-time phase: a node removed from the config leaves the cluster cleanly.
# Drains first when this node can reach the API with admin rights (role init).
if [ -s "$GS_ROOT/etc/kubernetes/admin.conf" ]; then
  export KUBECONFIG="$GS_ROOT/etc/kubernetes/admin.conf"
  kubectl drain "$GS_NODE_NAME" --ignore-daemonsets --delete-emptydir-data --timeout=300s || log "drain did not finish; resetting anyway"
  kubectl delete node "$GS_NODE_NAME" --ignore-not-found || true
fi
if [ -s "$GS_ROOT/etc/kubernetes/kubelet.conf" ] || [ -s "$GS_ROOT/etc/kubernetes/admin.conf" ]; then
  kubeadm reset -f >/dev/null
  changed "kubeadm reset"
fi
log "done (changed=${GS_CHANGED})"
