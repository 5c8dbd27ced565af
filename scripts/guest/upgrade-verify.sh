# shellcheck shell=bash
# Upgrade phase: upgrade-verify (on the node, on its new boot: the connection
# retries with the pinned host key). The same GPUs are back, by UUID; the
# configured driver is loaded; on NVSwitch systems Fabric Manager matches it
# and the fabric state is Completed on every GPU; the toolkit and kubelet run
# the configured versions. A failure exits non-zero with the seed 003 step that
# diagnoses it; the node stays cordoned (uncordon runs only after this).
# Prints the GPU inventory like verify does (the gpuInventory stack output).
# Runs also when upgrade-check found nothing to roll out: it only reads.
record=/var/lib/gpu-stack/upgrade/gpus.before
fail() { die "node ${GS_NODE_NAME}, phase upgrade-verify: $*. ${GS_NODE_NAME} stays cordoned and later waves do not start; fix it and run pulumi up again (docs/OPERATIONS.md, Upgrading)"; }
pkg_is() { case "$(pkg_version "$1")" in "$2"|"$2"-*|"$2".*) return 0 ;; *) return 1 ;; esac; }

loaded=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
[ "$loaded" = "$GS_DRIVER_VERSION" ] || fail "the kernel has nvidia '${loaded}' loaded, guest.nvidia.driverVersion is ${GS_DRIVER_VERSION}." \
    "Seed 003 step 2 (driver health): dmesg | grep -i -e nvrm -e xid, modinfo nvidia"
if [ "$GS_GPU_COUNT" -gt 0 ]; then
  count=$(nvidia-smi -L | grep -c '^GPU ' || true)
  [ "$count" -eq "$GS_GPU_COUNT" ] || fail "nvidia-smi -L lists ${count} GPUs, the config passes through ${GS_GPU_COUNT}. Seed 003 step 2 (driver health): nvidia-smi -L, dmesg | grep -i xid"
  if [ -s "$GS_ROOT$record" ]; then
    now=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | sort)
    if [ "$now" != "$(cat "$GS_ROOT$record")" ]; then
      gone=$(comm -23 "$GS_ROOT$record" <(printf '%s\n' "$now") | tr '\n' ' ')
      fail "the GPUs are not the ones there before the upgrade (missing: ${gone:-none}). Seed 003 step 2 (driver health): nvidia-smi -L, lspci -d 10de:"
    fi
  fi
fi
if [ "$GS_NVSWITCH_COUNT" -gt 0 ]; then
  pkg_is "$GS_FM_PROBE" "$GS_DRIVER_VERSION" || fail "Fabric Manager ($GS_FM_PROBE) is $(pkg_version "$GS_FM_PROBE"), the driver ${GS_DRIVER_VERSION}:" \
      "CUDA fails with error 802. Seed 003 step 2: apt-cache policy / dnf list ${GS_FM_PROBE}"
  systemctl is-active --quiet nvidia-fabricmanager || fail "nvidia-fabricmanager is not active. Seed 003 step 2: journalctl -u nvidia-fabricmanager, /var/log/fabricmanager.log"
  fabric_done() {
    [ "$(nvidia-smi -q | awk '/^ *Fabric *$/ {f = 1; next} f && /State/ {print $NF; f = 0}' | grep -c '^Completed$' || true)" -ge "$GS_GPU_COUNT" ]
  }
  deadline=$(( $(date +%s) + GS_FABRIC_TIMEOUT ))
  until fabric_done; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the NVLink fabric state is not Completed on every GPU after ${GS_FABRIC_TIMEOUT}s (nvidia-smi -q |" \
        "grep -A2 Fabric). Seed 003 step 2: journalctl -u nvidia-fabricmanager; on NVLink 5 also the NVLSM log"
    sleep "$GS_GATE_INTERVAL"
  done
fi
[ -z "$GS_TOOLKIT_VERSION" ] || pkg_is nvidia-container-toolkit "$GS_TOOLKIT_VERSION" || fail "nvidia-container-toolkit is $(pkg_version nvidia-container-toolkit)," \
    "guest.containerRuntime.nvidiaToolkitVersion is ${GS_TOOLKIT_VERSION}"
case "$GS_RUNTIME" in
  containerd) grep -q 'runtimes.nvidia' <<<"$(containerd config dump)" || fail "containerd has no nvidia runtime. Seed 003 step 3: containerd config dump | grep nvidia" ;;
  docker) grep -q nvidia <<<"$(docker info --format '{{json .Runtimes}}')" || fail "docker has no nvidia runtime" ;;
esac
if [ -n "$GS_K8S_VERSION" ]; then
  pkg_is kubelet "$GS_K8S_VERSION" || fail "kubelet is $(pkg_version kubelet), kubernetes.version is ${GS_K8S_VERSION}. Seed 003 step 1: journalctl -u kubelet"
  systemctl is-active --quiet kubelet || fail "kubelet is not running. Seed 003 step 1: journalctl -u kubelet"
fi
if [ -e "$GS_ROOT$record" ]; then
  rm -f "$GS_ROOT$record"
fi
# the rollout is done on this node: a later re-run of a step alone (its script changed) changes nothing
printf 'none\n' | write_file "$ROLLOUT_FILE" 0644 || true
echo "--- gpu-inventory ---"
if [ "$GS_GPU_COUNT" -gt 0 ]; then
  nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total --format=csv,noheader
  echo "--- nvidia-smi ---"
  nvidia-smi
fi
