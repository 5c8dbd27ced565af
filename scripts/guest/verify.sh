# shellcheck shell=bash
# Phase: verify. The GPUs, the NVSwitch fabric and the container runtime work;
# prints the GPU inventory that becomes a stack output.
count=$(nvidia-smi -L | grep -c '^GPU ' || true)
[ "$count" -eq "$GS_GPU_COUNT" ] || die "nvidia-smi -L lists ${count} GPUs, the config passes through ${GS_GPU_COUNT}; see dmesg for NVRM/Xid"
if [ "$GS_NVSWITCH_COUNT" -gt 0 ]; then
  systemctl is-active --quiet nvidia-fabricmanager || die "nvidia-fabricmanager is not active: CUDA fails with error 802 on NVSwitch systems"
  nvidia-smi topo -m >/dev/null || die "nvidia-smi topo -m failed"
  nvidia-smi nvlink -s >/dev/null || die "nvidia-smi nvlink -s failed"
fi
case "$GS_RUNTIME" in
  containerd) grep -q 'runtimes.nvidia' <<<"$(containerd config dump)" || die "containerd has no nvidia runtime" ;;
  docker) grep -q nvidia <<<"$(docker info --format '{{json .Runtimes}}')" || die "docker has no nvidia runtime" ;;
esac
# bootstrap is done: apt-daily / unattended-upgrades (dnf-makecache) run again (lib.sh pkg_timers_hold)
pkg_timers_resume >&2
echo "--- gpu-inventory ---"
nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total --format=csv,noheader
echo "--- nvidia-smi ---"
nvidia-smi
