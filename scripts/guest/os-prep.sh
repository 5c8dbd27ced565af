# shellcheck shell=bash
# Phase: os-prep. What kubeadm and the NVIDIA stack need from the OS.
family=$(os_id)

# Swap off, now and across reboots: "The default behavior of a kubelet is to fail to
# start if swap memory is detected on a node" (kubernetes.io Installing kubeadm, Swap
# configuration, v1.34); we set no KubeletConfiguration, so failSwapOn stays true.
if [ -n "$(swapon --show --noheadings 2>/dev/null)" ]; then
  swapoff -a
  changed "swap off"
fi
if grep -Eq '^[^#]\S*\s+\S+\s+swap\s' "$GS_ROOT/etc/fstab" 2>/dev/null; then
  sed -ri 's/^([^#]\S*\s+\S+\s+swap\s)/#\1/' "$GS_ROOT/etc/fstab"
  changed "swap commented out in /etc/fstab"
fi

if [ "$family" = rhel ]; then
  if command -v getenforce >/dev/null 2>&1 && [ "$(getenforce)" = Enforcing ] && [ "$GS_SELINUX" = permissive ]; then
    setenforce 0
    changed "SELinux permissive"
  fi
  if [ -f "$GS_ROOT/etc/selinux/config" ] && ! grep -qx "SELINUX=${GS_SELINUX}" "$GS_ROOT/etc/selinux/config"; then
    sed -i "s/^SELINUX=.*/SELINUX=${GS_SELINUX}/" "$GS_ROOT/etc/selinux/config"
    changed "SELINUX=${GS_SELINUX} in /etc/selinux/config"
  fi
  if [ "$GS_DISABLE_FIREWALLD" = 1 ] && systemctl is-enabled --quiet firewalld 2>/dev/null; then
    systemctl disable --now firewalld
    changed "firewalld disabled"
  fi
fi

# Package manager proxy (seed 000's lab had no direct internet); removed again
# when the config drops it. Never with credentials here (a world-readable file): apt finds the
# proxy's login in /etc/apt/auth.conf.d/gpu-stack.conf, dnf in proxy_username=/proxy_password=
# (phase credentials).
proxy="${GS_HTTPS_PROXY:-$GS_HTTP_PROXY}"
if [ "$family" = ubuntu ]; then
  if [ -n "$proxy" ]; then
    write_file /etc/apt/apt.conf.d/95gpu-stack-proxy 0644 <<CONF || true
Acquire::http::Proxy "${GS_HTTP_PROXY:-$GS_HTTPS_PROXY}";
Acquire::https::Proxy "${proxy}";
CONF
  elif [ -f "$GS_ROOT/etc/apt/apt.conf.d/95gpu-stack-proxy" ]; then
    rm -f "$GS_ROOT/etc/apt/apt.conf.d/95gpu-stack-proxy"
    changed "apt proxy removed"
  fi
else
  current=$(sed -n 's/^proxy=//p' "$GS_ROOT/etc/dnf/dnf.conf")
  if [ "$current" != "$proxy" ]; then
    sed -i '/^proxy=/d' "$GS_ROOT/etc/dnf/dnf.conf"
    [ -z "$proxy" ] || printf 'proxy=%s\n' "$proxy" >>"$GS_ROOT/etc/dnf/dnf.conf"
    changed "dnf proxy '${proxy}'"
  fi
fi

# Credentials the config no longer names (phase credentials wrote them; it only runs while a user is set).
if [ -z "$GS_PROXY_USER" ]; then
  if [ -f "$GS_ROOT/etc/gpu-stack/proxy.env" ]; then rm -f "$GS_ROOT/etc/gpu-stack/proxy.env"; changed "proxy credentials removed"; fi
  if [ "$family" = rhel ] && grep -q '^proxy_password=' "$GS_ROOT/etc/dnf/dnf.conf"; then
    sed -i -e '/^proxy_username=/d' -e '/^proxy_password=/d' "$GS_ROOT/etc/dnf/dnf.conf"
    chmod 0644 "$GS_ROOT/etc/dnf/dnf.conf"
    changed "dnf proxy credentials removed"
  fi
fi
if [ -z "$GS_REPO_USER" ] && [ -f "$GS_ROOT/etc/gpu-stack/netrc" ]; then
  rm -f "$GS_ROOT/etc/gpu-stack/netrc"
  changed "mirror credentials removed"
fi
if [ -z "${GS_PROXY_USER}${GS_REPO_USER}" ] && [ -f "$GS_ROOT/etc/apt/auth.conf.d/gpu-stack.conf" ]; then
  rm -f "$GS_ROOT/etc/apt/auth.conf.d/gpu-stack.conf"
  changed "apt credentials removed"
fi

# Time sync: certificates and etcd need it.
if [ "$family" = ubuntu ]; then
  ensure_pkgs chrony
  service_enable_now chrony
else
  ensure_pkgs chrony
  service_enable_now chronyd
fi

if [ "$(hostnamectl --static 2>/dev/null || true)" != "$GS_HOSTNAME" ]; then
  hostnamectl set-hostname "$GS_HOSTNAME"
  changed "hostname ${GS_HOSTNAME}"
fi
address=$(hostname -I | awk '{print $1}')
if ! grep -Eq "^${address//./\\.}\s+${GS_HOSTNAME}(\s|$)" "$GS_ROOT/etc/hosts"; then
  sed -i '/# gpu-stack node address$/d' "$GS_ROOT/etc/hosts"
  printf '%s %s # gpu-stack node address\n' "$address" "$GS_HOSTNAME" >>"$GS_ROOT/etc/hosts"
  changed "/etc/hosts: ${address} ${GS_HOSTNAME}"
fi

# kubernetes.io Container Runtimes (current) asks only for net.ipv4.ip_forward = 1; the
# br_netfilter module and bridge-nf-call-iptables/ip6tables are what the Installing kubeadm
# page required up to its "Letting iptables see bridged traffic" section (still there for
# the 1.23 clusters we support) and what bridge-based CNIs need; overlay is containerd's
# snapshotter; ip_vs* only matter for kube-proxy's IPVS mode. A superset, harmless.
modules=(overlay br_netfilter ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack)
printf '%s\n' "${modules[@]}" | write_file /etc/modules-load.d/gpu-stack-k8s.conf 0644 || true
for m in "${modules[@]}"; do
  module_loaded "$m" || { modprobe "$m"; changed "loaded ${m}"; }
done

if write_file /etc/sysctl.d/99-gpu-stack-k8s.conf 0644 <<'CONF'
net.bridge.bridge-nf-call-ip6tables = 1
net.bridge.bridge-nf-call-iptables = 1
net.ipv4.ip_forward = 1
CONF
then
  sysctl --system >/dev/null
fi
log "done (changed=${GS_CHANGED})"
