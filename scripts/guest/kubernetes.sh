# shellcheck shell=bash
# Phase: kubernetes. kubeadm, kubelet and kubectl pinned and held, then
# role init (single control plane, its taint removed) or role join (token and
# CA hash; never the unsafe skip). A node that has joined is not re-joined.
# Join: the bootstrap token arrives on stdin, never in the script or the logs;
# it is a short-lived token the control plane created for this node (phase
# join-token), or the joinToken secret for a cluster gpu-stack did not create.
family=$(os_id)
token=""
if [ "$GS_K8S_ROLE" = join ]; then
  IFS= read -r token || true
  [ -n "$token" ] || die "no bootstrap token arrived on stdin"
fi

kubernetes_repository "$GS_K8S_REPO" "$GS_K8S_VERSION"
if [ "$family" = ubuntu ]; then
  pkgs=(kubeadm kubelet kubectl)
else
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
    # The token kubeadm init creates is not used by anyone (each join gets its own
    # from phase join-token) and expires after an hour, never a TTL of 0 (no expiry).
    kubeadm init --kubernetes-version "v${GS_K8S_VERSION}" --pod-network-cidr "$GS_POD_CIDR" --service-cidr "$GS_SERVICE_CIDR" \
      --node-name "$GS_NODE_NAME" --cri-socket "$cri" --token-ttl 1h0m0s >/dev/null
    changed "kubeadm init"
  fi
  export KUBECONFIG="$GS_ROOT/etc/kubernetes/admin.conf"
  # Single control plane: the GPU pods must schedule on it. kubeadm taints it
  # node-role.kubernetes.io/master up to 1.23, both master and control-plane in
  # 1.24 (kubernetes PR 107533), control-plane only from 1.25 (PR 110095; KEP-2067).
  # Remove whichever of the two the node carries, so an init of any version (and
  # a node upgraded from 1.23 that kept the old one) ends up untainted.
  current_taints=$(kubectl get node "$GS_NODE_NAME" -o go-template='{{range .spec.taints}}{{.key}}={{.value}}:{{.effect}}{{"\n"}}{{end}}')
  for role_taint in node-role.kubernetes.io/master node-role.kubernetes.io/control-plane; do
    if grep -q "^${role_taint}=" <<<"$current_taints"; then
      kubectl taint node "$GS_NODE_NAME" "${role_taint}:NoSchedule-" >/dev/null
      changed "${role_taint} taint removed"
    fi
  done
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
