# shellcheck shell=bash
# Upgrade phase: upgrade-kubernetes (on a drained node), the kubeadm way, one
# minor at a time (upgrade-check refused the rest): the repository of the
# configured minor, kubeadm pinned, then on the control plane `kubeadm upgrade
# plan` and `kubeadm upgrade apply`, on every other node `kubeadm upgrade node`,
# then kubelet and kubectl pinned and a kubelet restart. kubernetes.sh follows
# (inlined after this) and finds the packages converged: it only re-applies
# labels, taints and the bootstrap token.
family=$(os_id)
# the bootstrap token (stdin) is for kubernetes.sh below: keep it from the
# package manager and kubeadm, and hand it back just before kubernetes.sh
IFS= read -r upgrade_token || true
exec </dev/null
k8s_is() { case "$(pkg_version "$1")" in "$GS_K8S_VERSION"|"$GS_K8S_VERSION"-*) return 0 ;; *) return 1 ;; esac; }

# the same repository files kubernetes.sh writes (lib.sh), for the configured minor
kubernetes_repository "$GS_K8S_REPO" "$GS_K8S_VERSION"
if [ "$family" = ubuntu ]; then
  kubeadm_pkg=(kubeadm)
  node_pkgs=(kubelet kubectl)
else
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
        || die "node ${GS_NODE_NAME}, phase upgrade-kubernetes: kubeadm upgrade plan v${GS_K8S_VERSION} refused; run it" \
            "on ${GS_NODE_NAME} to see why (seed 003 step 1: kubectl get nodes, kubectl -n kube-system get pods)"
      kubeadm upgrade apply -y "v${GS_K8S_VERSION}" >/dev/null \
        || die "node ${GS_NODE_NAME}, phase upgrade-kubernetes: kubeadm upgrade apply v${GS_K8S_VERSION} failed; kubeadm rolls" \
            "a failed control-plane upgrade back: see /var/log/syslog and kubectl -n kube-system get pods (seed 003 step 1)"
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
