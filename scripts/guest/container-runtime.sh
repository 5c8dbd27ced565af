# shellcheck shell=bash
# Phase: container-runtime (NvidiaRuntime, guest half). containerd (default) or
# docker with the systemd cgroup driver, the pinned nvidia-container-toolkit,
# and `nvidia-ctk runtime configure`. containerd gets an `nvidia` runtime used
# through a RuntimeClass (default only when asked); docker gets nvidia as its
# default runtime (seed 001). Configs are rebuilt in a temp file and installed
# only when they differ, so a converged host is not restarted. Docker's package
# repository (or GS_DOCKER_REPO, a mirror laid out like download.docker.com/linux)
# is added first where a package comes from it: docker-ce anywhere, containerd.io on EL;
# NVIDIA's libnvidia-container repository (GS_NCT_REPO) for the toolkit, on VMs with GPUs.
family=$(os_id)
registry_password=""
if [ -n "$GS_REGISTRY_USER" ]; then
  IFS= read -r registry_password || true
  [ -n "$registry_password" ] || die "guest.registryUsername is set but no password arrived on stdin"
fi

# docker_repo: Docker's repository for this distribution, like the Kubernetes one (lib.sh).
docker_repo() {
  if [ "$family" = ubuntu ]; then
    local keyring=/etc/apt/keyrings/docker.gpg codename
    codename=$(ubuntu_codename)
    repo_key "${GS_DOCKER_REPO}/ubuntu/gpg" "$keyring" "Docker apt key"
    repo_source /etc/apt/sources.list.d/docker.list <<CONF
deb [signed-by=${keyring}] ${GS_DOCKER_REPO}/ubuntu ${codename} stable
CONF
  else
    local path
    path=$(docker_el_path)
    repo_source /etc/yum.repos.d/docker-ce.repo "$GS_DOCKER_REPO" <<CONF
[docker-ce-stable]
name=Docker CE Stable
baseurl=${GS_DOCKER_REPO}/${path}/\$releasever/\$basearch/stable
enabled=1
gpgcheck=1
gpgkey=${GS_DOCKER_REPO}/${path}/gpg
CONF
  fi
}
if [ "$GS_RUNTIME" = docker ] || [ "$family" != ubuntu ]; then
  docker_repo
fi

# GS_TOOLKIT_VERSION empty: a VM without GPUs (issue 26 item 2). It gets the container runtime
# only: no NVIDIA repository, no toolkit, no nvidia runtime (a toolkit an older gpu-stack
# installed there is left installed, but no longer configured as a runtime).
if [ -n "$GS_TOOLKIT_VERSION" ]; then
  # NVIDIA's libnvidia-container repository (GS_NCT_REPO: guest.repositories.nvidiaContainerToolkit,
  # or https://nvidia.github.io/libnvidia-container), which no distribution carries: a stock image
  # has no source for these packages (lib.sh nvidia_container_toolkit_repository).
  nvidia_container_toolkit_repository "$GS_NCT_REPO"

  # The four packages NVIDIA's install guide pins together at one version
  # (docs.nvidia.com/datacenter/cloud-native/container-toolkit/1.17.8/install-guide.html, and the same at 1.20.0:
  # NVIDIA/cloud-native-docs container-toolkit/install-guide.md at 52dcb7b8, versions1.json 1.20.0 preferred:
  # nvidia-container-toolkit, -base, libnvidia-container-tools, libnvidia-container1 at
  # ${NVIDIA_CONTAINER_TOOLKIT_VERSION}). All four are held: the toolkit only requires
  # libnvidia-container-tools >= its build version (packaging/rpm/SPECS and debian/control
  # at v1.17.8; at v1.20.0 it requires -base and -tools of its own version, tools < 2.0.0), so a held toolkit alone lets the libraries drift on `dnf update`.
  if [ "$family" = ubuntu ]; then
    write_file /etc/apt/preferences.d/gpu-stack-nvidia-container-toolkit 0644 <<CONF || true
Package: nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1
Pin: version ${GS_TOOLKIT_VERSION}-*
Pin-Priority: 1001
CONF
    toolkit=(nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1)
  else
    toolkit=("nvidia-container-toolkit-${GS_TOOLKIT_VERSION}" "nvidia-container-toolkit-base-${GS_TOOLKIT_VERSION}"
             "libnvidia-container-tools-${GS_TOOLKIT_VERSION}" "libnvidia-container1-${GS_TOOLKIT_VERSION}")
  fi
  # all four at the pinned version, or install them together: a node set up when
  # only the toolkit was held may have newer libraries, which must not be held there
  toolkit_names=(nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1)
  for name in "${toolkit_names[@]}"; do
    case "$(pkg_version "$name")" in
      "${GS_TOOLKIT_VERSION}"|"${GS_TOOLKIT_VERSION}"-*) ;;
      *) pkg_install "${toolkit[@]}"; break ;;
    esac
  done
  pkg_hold "${toolkit_names[@]}"
fi

restart=0
# sync_proxy_dropin UNIT: the unit's proxy drop-in matches the config (seed 000:
# pulls went through a proxy). Returns 0 when it changed something.
sync_proxy_dropin() {
  local path="/etc/systemd/system/$1.service.d/http-proxy.conf"
  if [ -n "${GS_HTTP_PROXY}${GS_HTTPS_PROXY}" ]; then
    if [ -n "$GS_PROXY_USER" ]; then
      # the URLs with their credentials stay in the root-only file phase credentials wrote; an
      # Environment= line would show them to every user (`systemctl show -p Environment`)
      printf '[Service]\nEnvironmentFile=%s\nEnvironment="NO_PROXY=%s"\n' "$PROXY_ENV" "$GS_NO_PROXY" | write_file "$path" 0644
    else
      printf '[Service]\nEnvironment="HTTP_PROXY=%s"\nEnvironment="HTTPS_PROXY=%s"\nEnvironment="NO_PROXY=%s"\n' \
        "$GS_HTTP_PROXY" "$GS_HTTPS_PROXY" "$GS_NO_PROXY" | write_file "$path" 0644
    fi
  elif [ -f "$GS_ROOT$path" ]; then
    rm -f "$GS_ROOT$path"
    changed "removed ${path}"
  else
    return 1
  fi
}

if [ "$GS_RUNTIME" = containerd ]; then
  if [ "$family" = ubuntu ]; then ensure_pkgs containerd; else ensure_pkgs containerd.io; fi
  tmp=$(mktemp)
  containerd config default >"$tmp"
  # The systemd cgroup driver (kubeadm's kubelet default since 1.22) and the hosts.toml
  # directory for the mirrors. containerd 1.x (config version 2) writes
  # `SystemdCgroup = false` and `config_path = ""`; containerd 2.x (version 3) writes no
  # SystemdCgroup line at all and `config_path = ''` (containerd docs/cri/config.md at
  # v2.1.4, "Cgroup Driver" and "Full configuration"), so the key is added under the runc
  # options table there. Anything else is refused rather than left on cgroupfs.
  sed -i -E -e 's/^([[:space:]]*)SystemdCgroup = false/\1SystemdCgroup = true/' \
         -e "s#^([[:space:]]*)config_path = (\"\"|'')#\\1config_path = '/etc/containerd/certs.d'#" "$tmp"
  runc_options="^[[:space:]]*\\[plugins\\.('io\\.containerd\\.cri\\.v1\\.runtime'|\"io\\.containerd\\.grpc\\.v1\\.cri\")\\.containerd\\.runtimes\\.runc\\.options\\]"
  if ! grep -Eq '^[[:space:]]*SystemdCgroup = true' "$tmp"; then
    sed -i -E "/${runc_options}/a\\            SystemdCgroup = true" "$tmp"
  fi
  grep -Eq '^[[:space:]]*SystemdCgroup = true' "$tmp" \
    || die "containerd $(containerd --version 2>/dev/null || true): no runc options table in 'containerd config default' to set SystemdCgroup in"
  grep -q "^[[:space:]]*config_path = '/etc/containerd/certs.d'" "$tmp" \
    || die "containerd $(containerd --version 2>/dev/null || true): no registry config_path in 'containerd config default' to point at /etc/containerd/certs.d"
  if [ -n "$GS_TOOLKIT_VERSION" ]; then
    set_default=()
    [ "$GS_NVIDIA_DEFAULT" = 1 ] && set_default=(--set-as-default)
    nvidia-ctk runtime configure --runtime=containerd --config="$tmp" "${set_default[@]}" >/dev/null
  fi
  write_file /etc/containerd/config.toml 0644 <"$tmp" && restart=1
  rm -f "$tmp"
  for pair in $GS_REGISTRY_MIRRORS; do
    registry="${pair%%=*}"
    endpoint="${pair#*=}"
    server="https://${registry}"
    [ "$registry" = docker.io ] && server="https://registry-1.docker.io"
    {
      printf 'server = "%s"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n' "$server" "$endpoint"
      if [ -n "$registry_password" ]; then
        printf '  [host."%s".header]\n    Authorization = ["Basic %s"]\n' "$endpoint" \
          "$(printf '%s:%s' "$GS_REGISTRY_USER" "$registry_password" | base64 -w0)"
      fi
    } | write_file "/etc/containerd/certs.d/${registry}/hosts.toml" 0600 || true
  done
  if sync_proxy_dropin containerd; then
    systemctl daemon-reload
    restart=1
  fi
  service_enable_now containerd
  if [ "$restart" = 1 ]; then systemctl restart containerd; changed "containerd restarted"; fi
else
  ensure_pkgs docker-ce docker-ce-cli containerd.io
  mirrors=""
  for pair in $GS_REGISTRY_MIRRORS; do
    [ "${pair%%=*}" = docker.io ] && mirrors="${mirrors:+$mirrors, }\"${pair#*=}\""
  done
  tmp=$(mktemp)
  {
    printf '{\n  "exec-opts": ["native.cgroupdriver=systemd"],\n  "log-driver": "json-file",\n  "log-opts": {"max-size": "100m"},\n'
    printf '  "storage-driver": "overlay2",\n  "registry-mirrors": [%s]\n}\n' "$mirrors"
  } >"$tmp"
  [ -z "$GS_TOOLKIT_VERSION" ] || nvidia-ctk runtime configure --runtime=docker --set-as-default --config="$tmp" >/dev/null
  write_file /etc/docker/daemon.json 0644 <"$tmp" && restart=1
  rm -f "$tmp"
  if sync_proxy_dropin docker; then
    systemctl daemon-reload
    restart=1
  fi
  service_enable_now docker
  if [ "$restart" = 1 ]; then systemctl restart docker; changed "docker restarted"; fi
fi
log "done (changed=${GS_CHANGED})"
