# shellcheck shell=bash
# Phase: preflight. Checks, each failure saying what to fix; it changes nothing
# but installing pciutils where the image lacks lspci (minimal EL images). The
# Kubernetes repository is not checked here: its URL follows the Kubernetes minor,
# and a version change would re-run this phase on a converged node.
family=$(os_id)
version=$(os_version)
[ "$family" = "$GS_OS_FAMILY" ] || die "the guest runs ${family} ${version}; config guest.os.family is ${GS_OS_FAMILY}"
case "$family" in
  ubuntu) [ "$version" = "$GS_OS_VERSION" ] || die "the guest runs Ubuntu ${version}; config guest.os.version is ${GS_OS_VERSION}" ;;
  rhel) [ "${version%%.*}" = "$GS_OS_VERSION" ] || die "the guest runs EL ${version}; config guest.os.version is ${GS_OS_VERSION}" ;;
esac

avail_kib=$(df -Pk "$GS_ROOT/" | awk 'NR == 2 {print $4}')
need_kib=$((GS_MIN_ROOT_FREE_GIB * 1024 * 1024))
if [ "$avail_kib" -lt "$need_kib" ]; then
  die "/ has $((avail_kib / 1024 / 1024)) GiB free, ${GS_MIN_ROOT_FREE_GIB} GiB needed: the driver and" \
      "CUDA installers fill the root filesystem (seed 001). Raise vms[].diskGib and grow the filesystem."
fi

# The vendor repositories this VM's phases install from (render/guest_scripts.py): each must
# answer through the proxy apt/dnf will use, before anything is installed; an empty base is one
# this VM does not need. A missing one otherwise fails a later phase with the driver half in place.
[ -z "$GS_NCT_REPO" ] || repo_check "NVIDIA Container Toolkit" gpu-stack:guest.repositories.nvidiaContainerToolkit nvidia-container-toolkit "$GS_NCT_REPO"
[ -z "$GS_CUDA_REPO" ] || repo_check "NVIDIA CUDA" gpu-stack:guest.repositories.cuda cuda "$GS_CUDA_REPO"
[ -z "$GS_DOCKER_REPO" ] || repo_check "Docker" gpu-stack:guest.containerRuntime.dockerRepository docker "$GS_DOCKER_REPO"

command -v lspci >/dev/null 2>&1 || ensure_pkgs pciutils
command -v lspci >/dev/null 2>&1 || die "lspci is still missing after installing pciutils"
# -n prints "<domain:bus:dev.fn> <class>: <vendor>:<device> (rev ..)" (pciutils lspci.c
# show_terse, v3.14.0): class 0302 (3D: datacenter GPUs) or 0300 (VGA: consumer GPUs),
# 0680 (bridge: NVSwitch), as in the captures under tests/fixtures/host-facts.
nvidia=$(lspci -Dn -d 10de:)
gpus=$(printf '%s\n' "$nvidia" | awk '$2 ~ /^030[02]:?$/' | wc -l)
switches=$(printf '%s\n' "$nvidia" | awk '$2 ~ /^0680:?$/' | wc -l)
[ "$gpus" -eq "$GS_GPU_COUNT" ] || die "lspci shows ${gpus} NVIDIA GPUs, the config passes through ${GS_GPU_COUNT}: check the domain's hostdevs (virsh dumpxml) and dmesg for vfio errors"
[ "$switches" -eq "$GS_NVSWITCH_COUNT" ] || die "lspci shows ${switches} NVSwitches, the config passes through ${GS_NVSWITCH_COUNT}"

# mokutil --sb-state prints "SecureBoot enabled", "SecureBoot disabled" (then maybe
# "Platform is in Setup Mode"), or "EFI variables are not supported on this system" on
# stderr for BIOS boot (lcp/mokutil src/mokutil.c at 9ae73db1).
if command -v mokutil >/dev/null 2>&1 && grep -q "SecureBoot enabled" <<<"$(mokutil --sb-state 2>/dev/null || true)"; then
  die "Secure Boot is on in the guest; the NVIDIA module (${GS_DRIVER_METHOD} install, built by DKMS) is unsigned" \
      "and will not load. Boot the VM with non-Secure-Boot OVMF (hosts[].firmware.code) or enroll a MOK."
fi
log "ok: ${family} ${version}, ${gpus} GPUs, ${switches} NVSwitches, $((avail_kib / 1024 / 1024)) GiB free on /"
