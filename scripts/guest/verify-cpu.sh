# shellcheck shell=bash
# Phase: verify, on a VM without GPUs (GS_GPU_COUNT=0, a CPU-only control plane;
# render/guest_scripts.py CPU_BODIES). It has no driver, so it never asks
# nvidia-smi (preflight.sh already found no NVIDIA device with lspci): it
# checks that the container runtime answers. Prints an
# empty GPU inventory, which render/verify_output.parse_verify_output reads as no GPUs.
[ "$GS_GPU_COUNT" -eq 0 ] || die "verify-cpu runs on VMs without GPUs; the config passes through ${GS_GPU_COUNT}"
case "$GS_RUNTIME" in
  containerd) containerd config dump >/dev/null || die "containerd does not answer (containerd config dump)" ;;
  docker) docker info >/dev/null || die "docker does not answer (docker info)" ;;
esac
# bootstrap is done: apt-daily / unattended-upgrades (dnf-makecache) run again (lib.sh pkg_timers_hold)
pkg_timers_resume >&2
# the node is at the configured versions (verify.sh does the same)
[ -e "$GS_ROOT$ROLLOUT_FILE" ] || printf 'none\n' | write_file "$ROLLOUT_FILE" 0644 >&2 || true
# what this bootstrap installed, where the node has no record yet (lib.sh record_on_node; verify.sh does the same)
if [ "$GS_ANNOTATE" = 1 ]; then
  toolkit=$(pkg_version nvidia-container-toolkit)
  kubelet=$(pkg_version kubelet)
  record_on_node absent "${EXPECTED_ANNOTATION}toolkit=${toolkit%%-*}" "${EXPECTED_ANNOTATION}kubernetes=${kubelet%%-*}" >&2 \
    || log "node ${GS_NODE_NAME}: the API server did not answer with the kubelet's credentials, so the versions are not recorded on the Node" >&2
fi
echo "--- gpu-inventory ---"
