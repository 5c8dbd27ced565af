# shellcheck shell=bash
# Phase: kubeconfig (role init). Prints the admin kubeconfig, then the CA
# public-key hash that joining nodes pin. The command's stdout is a secret.
[ -s "$GS_ROOT/etc/kubernetes/admin.conf" ] || die "no /etc/kubernetes/admin.conf: kubeadm init has not run"
cat "$GS_ROOT/etc/kubernetes/admin.conf"
hash=$(openssl x509 -pubkey -noout -in "$GS_ROOT/etc/kubernetes/pki/ca.crt" \
  | openssl pkey -pubin -outform der 2>/dev/null | sha256sum | cut -d' ' -f1)
printf '# gpu-stack-ca-cert-hash: sha256:%s\n' "$hash"
