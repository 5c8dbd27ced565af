# shellcheck shell=bash
# Phase: driver. The pinned NVIDIA driver, Fabric Manager at exactly the same
# version when NVSwitches are attached (without it CUDA fails with error 802),
# and persistence mode. Skipped when that version is already loaded.
# Fabric Manager and NSCQ names change with the branch and repository
# (render/nvidia_packages.py): GS_FM_PACKAGES, GS_FM_PROBE, GS_FM_HOLD, and
# NVLSM on NVLink 5 (GS_NVLINK5_PACKAGES). As upgrade-driver (GS_UPGRADE=1, on a
# drained node) an older loaded module is left for upgrade-reboot to replace.
#
# Kernel modules (GS_KERNEL_MODULES, guest.nvidia.kernelModules): open or
# proprietary, chosen from the GPU architecture (config/catalog.py). On Ubuntu
# the signed, precompiled modules Canonical builds for each kernel are
# preferred: linux-modules-nvidia-<branch>-server[-open]-<uname -r> for the
# running kernel plus the -<flavour> metapackage that follows kernel updates,
# with nvidia-headless-no-dkms-<branch>-server[-open] for the user space (names
# from packages.ubuntu.com, source linux-restricted-modules and
# nvidia-graphics-drivers-<branch>-server). No compiler, no headers, no DKMS
# build at boot, and they load under Secure Boot. Where no precompiled package
# exists for the running kernel, nvidia-headless-<branch>-server[-open] pulls in
# nvidia-dkms-<branch>-server[-open], which builds the module (minutes per node,
# docs/PERFORMANCE.md).
family=$(os_id)
branch="${GS_DRIVER_VERSION%%.*}"
loaded=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
open_suffix=""
[ "$GS_KERNEL_MODULES" = open ] && open_suffix="-open"
kernel=$(uname -r)
modules_source=dkms

# NVIDIA's CUDA repository (GS_CUDA_REPO: guest.repositories.cuda, or
# https://developer.download.nvidia.com/compute/cuda/repos), added before the first package
# query where this VM installs from it (render/guest_scripts.py cuda_repository_needed): on EL
# the driver and Fabric Manager (render/nvidia_packages.py), on Ubuntu only nvlsm for NVLink 5,
# since the driver, Fabric Manager and NSCQ come from Ubuntu's own archive there. Empty: none.
if [ -n "$GS_CUDA_REPO" ]; then
  cuda_repository "$GS_CUDA_REPO"
fi

if [ "$family" = ubuntu ]; then
  write_file /etc/apt/preferences.d/gpu-stack-nvidia-driver 0644 <<CONF || true
Package: /^(lib)?nvidia-.*-${branch}(-server)?(-open)?$/
Pin: version ${GS_DRIVER_VERSION}-*
Pin-Priority: 1001
CONF
  precompiled="linux-modules-nvidia-${branch}-server${open_suffix}-${kernel}"
  flavour=""
  [[ "$kernel" =~ ^[0-9.]+-[0-9]+-(.+)$ ]] && flavour="${BASH_REMATCH[1]}"
  if [ "$GS_DRIVER_METHOD" = package ] && [ "$loaded" != "$GS_DRIVER_VERSION" ] && [ -n "$flavour" ] \
     && apt_package_exists "$precompiled"; then
    modules_source=precompiled
    driver_pkgs=("$precompiled" "linux-modules-nvidia-${branch}-server${open_suffix}-${flavour}"
                 "nvidia-headless-no-dkms-${branch}-server${open_suffix}" "nvidia-utils-${branch}-server")
  else
    driver_pkgs=("nvidia-headless-${branch}-server${open_suffix}" "nvidia-utils-${branch}-server")
  fi
else
  # NVIDIA's CUDA repository for EL9 (sources, read 2026-12-02):
  # - kernel modules: kmod-nvidia-open-dkms (streams open-dkms, <branch>-open, from 515) or
  #   kmod-nvidia-latest-dkms (streams latest-dkms, <branch>-dkms) (NVIDIA/yum-packaging-dkms-nvidia
  #   README). On EL 8/9 the repository segregates branches in dnf module streams of module
  #   nvidia-driver: "dnf module enable nvidia-driver:580-open" to install a branch (NVIDIA Driver
  #   Installation Guide, Kernel Modules), `dnf module enable -y nvidia-driver:${DRIVER_BRANCH}-dkms`
  #   in NVIDIA/gpu-driver-container rhel9/install.sh; a module's packages outside the enabled
  #   stream are hidden from dnf, so the stream of this branch and flavour is enabled first.
  # - compute-only ("headless") driver from 560: nvidia-driver-cuda + the kmod package (Driver
  #   Installation Guide, Compute-only and Desktop Installation); nvidia-driver-cuda requires
  #   nvidia-kmod-common and nvidia-persistenced from 560 on, before that only nvidia-driver
  #   brings nvidia-kmod-common (NVIDIA/yum-packaging-nvidia-driver nvidia-driver.spec, branches
  #   555 and 560), so older branches also install nvidia-driver (the desktop part).
  kmod="kmod-nvidia-latest-dkms"
  module_stream="${branch}-dkms"
  if [ "$GS_KERNEL_MODULES" = open ]; then
    kmod="kmod-nvidia-open-dkms"
    module_stream="${branch}-open"
  fi
  driver_pkgs=("nvidia-driver-cuda-${GS_DRIVER_VERSION}" "${kmod}-${GS_DRIVER_VERSION}")
  el_hold=(nvidia-driver-cuda "$kmod")
  if [ "$branch" -lt 560 ]; then
    driver_pkgs=("nvidia-driver-${GS_DRIVER_VERSION}" "${driver_pkgs[@]}")
    el_hold=(nvidia-driver "${el_hold[@]}")
  fi
fi

# el_module_stream: module nvidia-driver at stream $module_stream where the repository has the
# module. dnf keeps module state in /etc/dnf/modules.d/<module>.module, keys name, stream,
# profiles, state (rpm-software-management/libdnf ModulePackageContainer.cpp, ModulePersistor).
# Another enabled stream (another branch or flavour: an upgrade) is reset first, as dnf refuses
# to switch an enabled stream in place.
el_module_stream() {
  local state="$GS_ROOT/etc/dnf/modules.d/nvidia-driver.module"
  if [ -f "$state" ] && grep -Eqx "stream[[:space:]]*=[[:space:]]*${module_stream}" "$state" \
     && grep -Eqx "state[[:space:]]*=[[:space:]]*enabled" "$state"; then
    return 0
  fi
  pkg_timers_hold
  if ! dnf -q module list nvidia-driver >/dev/null 2>&1; then
    log "the repositories have no nvidia-driver module streams; installing ${GS_DRIVER_VERSION} by exact version"
    return 0
  fi
  if [ -f "$state" ] && grep -Eq "^stream[[:space:]]*=[[:space:]]*[^[:space:]]" "$state"; then
    dnf -y -q module reset nvidia-driver
  fi
  dnf -y -q module enable "nvidia-driver:${module_stream}"
  changed "dnf module nvidia-driver:${module_stream} enabled"
}
read -r -a fm_pkgs <<<"$GS_FM_PACKAGES"
read -r -a fm_hold <<<"$GS_FM_HOLD"
fm_probe="$GS_FM_PROBE"

if [ "$loaded" = "$GS_DRIVER_VERSION" ]; then
  log "driver ${loaded} is loaded"
else
  case "$GS_DRIVER_METHOD" in
    package)
      log "kernel modules: ${GS_KERNEL_MODULES}, ${modules_source} (kernel ${kernel})"
      [ "$family" = rhel ] && el_module_stream
      pkg_install "${driver_pkgs[@]}"
      [ "$family" = ubuntu ] && pkg_hold "${driver_pkgs[@]}"
      if [ "$family" = rhel ]; then
        # the packages nvidia-driver-cuda requires at its own version (nvidia-driver.spec) are locked
        # too, where installed: the branch's stream keeps the branch, not the patch version, and NVIDIA
        # locks every *nvidia*<branch>* package where no stream does (Driver Installation Guide,
        # Version locking)
        for dependency in nvidia-driver-cuda-libs nvidia-kmod-common nvidia-persistenced; do
          if [ -n "$(pkg_version "$dependency")" ]; then el_hold+=("$dependency"); fi
        done
        pkg_hold "${el_hold[@]}"
      fi
      ;;
    runfile)
      if [ "$family" = ubuntu ]; then
        ensure_pkgs build-essential dkms "linux-headers-$(uname -r)"
      else
        ensure_pkgs gcc make dkms elfutils-libelf-devel "kernel-devel-$(uname -r)" "kernel-headers-$(uname -r)"
      fi
      runfile="/var/cache/gpu-stack/NVIDIA-Linux-x86_64-${GS_DRIVER_VERSION}.run"
      if [ ! -s "$GS_ROOT$runfile" ]; then
        mkdir -p "$GS_ROOT/var/cache/gpu-stack"
        repo_fetch "$GS_DRIVER_RUNFILE_URL" -o "$GS_ROOT$runfile"
      fi
      # seed 001's flags: no prompts, DKMS so kernel updates rebuild the module. The flavour:
      # --kernel-module-type=open|proprietary (-M) from 555 on, where
      # --kernel-module-build-directory (-m) became "deprecated; use --kernel-module-type";
      # before 555 only -m=kernel-open|kernel exists (NVIDIA/nvidia-installer option_table.h at
      # tags 550.144.03, 555.42.02, 580.95.05, 590.48.01). The installer's default is open from 560.
      if [ "$branch" -ge 555 ]; then
        module_flag="--kernel-module-type=${GS_KERNEL_MODULES}"
      else
        module_flag="-m=kernel"
        [ "$GS_KERNEL_MODULES" = open ] && module_flag="-m=kernel-open"
      fi
      sh "$GS_ROOT$runfile" --silent --dkms --accept-license --no-questions "$module_flag" --tmpdir="$GS_ROOT/var/tmp"
      changed "installed driver ${GS_DRIVER_VERSION} from the .run installer"
      ;;
  esac
  if [ -n "$loaded" ] && [ "${GS_UPGRADE:-0}" = 1 ]; then
    log "driver ${GS_DRIVER_VERSION} installed, ${loaded} still loaded: upgrade-reboot reboots the drained node"
  else
    if [ -n "$loaded" ]; then
      modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia 2>/dev/null \
        || die "driver ${GS_DRIVER_VERSION} is installed but ${loaded} is loaded and busy: drain the node and reboot it (docs/OPERATIONS.md)"
    fi
    modprobe nvidia
    loaded=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
    if [ "$loaded" != "$GS_DRIVER_VERSION" ] && [ "$modules_source" = precompiled ]; then
      die "the precompiled modules for kernel ${kernel} (${precompiled}) are driver '${loaded}', not ${GS_DRIVER_VERSION}; pin guest.nvidia.driverVersion to '${loaded}', or use installMethod runfile"
    fi
    [ "$loaded" = "$GS_DRIVER_VERSION" ] || die "after installing ${GS_DRIVER_VERSION} the kernel has '${loaded}' loaded; see dmesg"
    changed "driver ${GS_DRIVER_VERSION} loaded"
  fi
fi

if [ "$GS_NVSWITCH_COUNT" -gt 0 ]; then
  fm_version=$(pkg_version "$fm_probe")
  case "$fm_version" in
    "${GS_DRIVER_VERSION}"|"${GS_DRIVER_VERSION}"-*) ;;
    *)
      # On EL, Fabric Manager and NSCQ are packages of the nvidia-driver module too (its `fm`
      # profile: "dnf module install nvidia-driver:${stream}/fm", NVIDIA/yum-packaging-fabric-manager
      # README), hidden until a stream is enabled: also after a runfile driver, which enabled none
      [ "$family" = rhel ] && el_module_stream
      pkg_install "${fm_pkgs[@]}" ;;
  esac
  # Check the packages that hold the files, not the ones asked for: where a
  # branch has ended in an Ubuntu release, nvidia-fabricmanager-<branch> and
  # libnvidia-nscq-<branch> are transitional packages at the pinned version
  # whose dependency brings a newer branch (render/nvidia_packages.py), and
  # CUDA then fails with error 802. dpkg-query -S prints "name[:arch]: path"
  # per match (a pattern matches any path containing it); both tools exit 1
  # for an unowned file. NVIDIA's CUDA repository (EL) has no transitional
  # packages, so there only the daemon's owner is read.
  if [ "$family" = ubuntu ]; then
    owners=$({ dpkg-query -S /usr/bin/nv-fabricmanager 2>/dev/null || true; dpkg-query -S 'libnvidia-nscq.so*' 2>/dev/null || true; } \
             | grep -E '^[^ ,]+: /' || true)
  else
    owners=$(rpm -qf --qf '%{NAME}: /usr/bin/nv-fabricmanager\n' /usr/bin/nv-fabricmanager 2>/dev/null) || owners=""
  fi
  grep -q ': /usr/bin/nv-fabricmanager$' <<<"$owners" || owners="${fm_probe}: /usr/bin/nv-fabricmanager"$'\n'"${owners}"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    owner="${line%%: *}"
    owner="${owner%%:*}"
    file="${line#*: }"
    owner_version=$(pkg_version "$owner")
    case "$owner_version" in
      "${GS_DRIVER_VERSION}"|"${GS_DRIVER_VERSION}"-*) ;;
      *) die "Fabric Manager's ${file} (package ${owner}) is '${owner_version}', not the driver's ${GS_DRIVER_VERSION}:" \
          "${GS_FM_HOLD// / or } is probably a transitional package to a newer branch in this release; pin" \
          "guest.nvidia.driverVersion to a branch the release still ships (apt-cache show / dnf info ${fm_probe})" ;;
    esac
  done <<<"$owners"
  pkg_hold "${fm_hold[@]}"
  if [ -n "$GS_NVLINK5_PACKAGES" ]; then
    read -r -a nvlink5_pkgs <<<"$GS_NVLINK5_PACKAGES"
    ensure_pkgs "${nvlink5_pkgs[@]}"
  fi
  service_enable_now nvidia-fabricmanager
fi

if grep -q Disabled <<<"$(nvidia-smi --query-gpu=persistence_mode --format=csv,noheader)"; then
  nvidia-smi -pm 1 >/dev/null
  changed "persistence mode on"
fi
service_enable_now nvidia-persistenced
log "done (changed=${GS_CHANGED})"
