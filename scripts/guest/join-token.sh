# shellcheck shell=bash
# Phase: join-token (runs on the init VM, once per joining VM). Creates a
# short-lived bootstrap token for one node's `kubeadm join` and prints it; the
# command's stdout is a secret and travels on the joining VM's stdin. The
# token expires after GS_TOKEN_TTL (kubeadm token create --ttl): a node that
# has joined never needs it again, and nothing re-creates it on an unchanged
# stack (docs/OPERATIONS.md, join tokens). The description names the node so
# `kubeadm token list` shows what each token was for.
# Flags as in the kubeadm token create reference (kubernetes/website generated/
# kubeadm_token_create.md): --usages and --groups spelled out at their documented defaults
# ([signing,authentication], [system:bootstrappers:kubeadm:default-node-token]) so a
# changed default cannot change what the token may do; the token is "[a-z0-9]{6}.[a-z0-9]{16}".
kubeconfig="$GS_ROOT/etc/kubernetes/admin.conf"
[ -s "$kubeconfig" ] || die "no /etc/kubernetes/admin.conf: kubeadm init has not run on this VM"
token=$(kubeadm token create --kubeconfig "$kubeconfig" --ttl "$GS_TOKEN_TTL" \
  --description "gpu-stack: kubeadm join of ${GS_JOIN_NODE}" --usages signing,authentication \
  --groups system:bootstrappers:kubeadm:default-node-token)
grep -Eqx '[a-z0-9]{6}\.[a-z0-9]{16}' <<<"$token" || die "kubeadm token create printed no token"
printf '# gpu-stack-join-token: %s\n' "$token"
