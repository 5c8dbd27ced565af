# shellcheck shell=bash
# Phase: verify. The GPUs, the NVSwitch fabric and the container runtime work;
# prints the GPU inventory that becomes a stack output.
#
# Not only exit codes: the outputs are parsed (POSIX awk, as Ubuntu's mawk runs
# it) and every GPU is named by its UUID, which stays the same inside and
# outside the VM; bus IDs do not (a VM renumbers every bus: host 1b:00.0 is
# guest 0d:00.0 in the 8xH100 captures, tests/fixtures/nvidia-smi/).
# - nvidia-smi topo -m: on an NVSwitch system every GPU pair is NV<n> (all NV18
#   on HGX H100); a PIX/PXB/PHB/NODE/SYS pair means that pair talks over PCIe.
# - nvidia-smi nvlink -s: every link of every GPU is up ("<inactive>" is down)
#   at one speed (26.562 GB/s per link on H100).
# - nvidia-smi -q, section Fabric: State Completed and Status Success. "In
#   Progress" is what an HGX GPU shows without its NVSwitches or Fabric
#   Manager, and CUDA then fails with error 802. N/A: no fabric (PCIe GPUs).

strip_ansi() { awk '{ gsub(/\033\[[0-9;]*m/, ""); print }'; }

# gpu_uuids: "index uuid" per GPU, from nvidia-smi -L
gpu_uuids() {
  awk '/^GPU [0-9]+:/ { i = $2; sub(/:$/, "", i); u = $0; sub(/.*\(UUID: /, "", u); sub(/\).*/, "", u); print i, u }'
}

# topo_non_nvlink_pairs < topo -m: "GPUi GPUj CELL" for every GPU pair not joined by NVLink
topo_non_nvlink_pairs() {
  strip_ansi | awk -F '\t' '
    !header && /GPU0/ && /CPU Affinity/ {
      header = 1; off = ($1 == "GPU0") ? 1 : 0
      for (k = 1; k <= NF; k++) col[k + off] = $k
      next
    }
    header && $1 ~ /^GPU[0-9]+$/ {
      for (k = 2; k <= NF; k++) {
        if (col[k] !~ /^GPU[0-9]+$/ || col[k] == $1) continue
        cell = $k; gsub(/ /, "", cell)
        if (cell !~ /^NV[0-9]+$/) print $1, col[k], cell
      }
    }
    header && /^$/ { exit }'
}

# topo_gpu_rows < topo -m: the number of GPU rows
topo_gpu_rows() { strip_ansi | awk -F '\t' '$1 ~ /^GPU[0-9]+$/ && !/CPU Affinity/ { n++ } END { print n + 0 }'; }

# nvlink_links < nvlink -s: "uuid link state" per link; state is the speed (26.562) or "down"
nvlink_links() {
  awk '
    /^GPU [0-9]+:/ { u = $0; sub(/.*\(UUID: /, "", u); sub(/\).*/, "", u); next }
    /^[ \t]+Link [0-9]+:/ {
      l = $0; sub(/^[ \t]+Link /, "", l); n = l; sub(/:.*/, "", n); v = l; sub(/^[0-9]+: */, "", v)
      if (v ~ /^[0-9.]+ GB\/s$/) { sub(/ GB\/s$/, "", v); print u, n, v } else print u, n, "down"
    }'
}

# fabric_states < nvidia-smi -q: "uuid state status" per GPU (the Fabric section's first State and Status)
fabric_states() {
  awk '
    function trim(s) { sub(/^[^:]*: */, "", s); sub(/ +$/, "", s); return s }
    /^GPU [0-9A-Fa-f]+:/ { if (u != "") print u, st, ss; u = ""; st = "none"; ss = "none"; infab = 0; next }
    /^    GPU UUID / { u = trim($0); next }
    /^    Fabric *$/ { infab = 1; seen = 0; next }
    infab && /^    [^ ]/ { infab = 0 }
    infab && /^        State / && !(seen % 2) { st = trim($0); gsub(/ /, "_", st); seen++ }
    infab && /^        Status / && seen == 1 { ss = trim($0); gsub(/ /, "_", ss); seen++ }
    END { if (u != "") print u, st, ss }'
}

uuids=$(nvidia-smi -L | gpu_uuids)
count=$(awk 'NF' <<<"$uuids" | wc -l)
[ "$count" -eq "$GS_GPU_COUNT" ] || die "nvidia-smi -L lists ${count} GPUs, the config passes through ${GS_GPU_COUNT}; see dmesg for NVRM/Xid"

if [ "$GS_NVSWITCH_COUNT" -gt 0 ]; then
  if ! systemctl is-active --quiet nvidia-fabricmanager; then
    systemctl status --no-pager nvidia-fabricmanager >&2 || true
    die "nvidia-fabricmanager is not active: CUDA fails with error 802 on NVSwitch systems"
  fi
  topo=$(nvidia-smi topo -m) || die "nvidia-smi topo -m failed"
  rows=$(topo_gpu_rows <<<"$topo")
  [ "$rows" -eq "$GS_GPU_COUNT" ] || die "nvidia-smi topo -m shows ${rows} GPUs, expected ${GS_GPU_COUNT}"
  pcie=$(topo_non_nvlink_pairs <<<"$topo")
  if [ -n "$pcie" ]; then
    printf '%s\n' "$pcie" | while read -r a b cell; do
      printf '  %s (%s) - %s (%s): %s\n' "$a" "$(awk -v i="${a#GPU}" '$1 == i { print $2 }' <<<"$uuids")" \
        "$b" "$(awk -v i="${b#GPU}" '$1 == i { print $2 }' <<<"$uuids")" "$cell" >&2
    done
    die "GPU pairs not connected by NVLink (topo -m): every pair must be NV<n> behind ${GS_NVSWITCH_COUNT} NVSwitches; check that all NVSwitches are passed through and Fabric Manager configured them"
  fi
  nvlink=$(nvidia-smi nvlink -s) || die "nvidia-smi nvlink -s failed"
  links=$(nvlink_links <<<"$nvlink")
  while read -r _ uuid; do
    [ -n "$uuid" ] || continue
    grep -q "^${uuid} " <<<"$links" || die "nvidia-smi nvlink -s shows no links for ${uuid}"
  done <<<"$uuids"
  down=$(awk '$3 == "down" { print "  " $1 " link " $2 }' <<<"$links")
  [ -z "$down" ] || { printf '%s\n' "$down" >&2; die "NVLinks are down (nvidia-smi nvlink -s)"; }
  speeds=$(awk '{ print $3 }' <<<"$links" | sort -u | tr '\n' ' ')
  [ "$(wc -w <<<"$speeds")" -eq 1 ] || die "NVLinks run at different speeds (${speeds% } GB/s): a degraded link trains down; see nvidia-smi nvlink -e"
  log "NVLink: $(wc -l <<<"$links") links up at ${speeds% } GB/s, every GPU pair NVLink-connected"
fi

# Fabric state of every GPU, by UUID (any VM: an HGX GPU passed through without
# its NVSwitches shows "In Progress" even when the config declares none).
fabric=$(nvidia-smi -q | fabric_states)
while read -r _ uuid; do
  [ -n "$uuid" ] || continue
  read -r state status <<<"$(awk -v u="$uuid" '$1 == u { print $2, $3 }' <<<"$fabric")"
  case "${state:-none}:${status:-none}" in
    Completed:Success|N/A:*|none:*) ;;
    *) die "GPU ${uuid}: fabric State ${state//_/ }, Status ${status//_/ } (nvidia-smi -q); expected Completed / Success." \
        "CUDA fails with error 802 until it is: check nvidia-fabricmanager and that every NVSwitch is passed through" ;;
  esac
done <<<"$uuids"

case "$GS_RUNTIME" in
  containerd) grep -q 'runtimes.nvidia' <<<"$(containerd config dump)" || die "containerd has no nvidia runtime" ;;
  docker) grep -q nvidia <<<"$(docker info --format '{{json .Runtimes}}')" || die "docker has no nvidia runtime" ;;
esac
# bootstrap is done: apt-daily / unattended-upgrades (dnf-makecache) run again (lib.sh pkg_timers_hold)
pkg_timers_resume >&2
# the node is at the configured versions: nothing to roll out until upgrade-check says otherwise, so an upgrade
# step that a gpu-stack release re-runs alone (upgrade-reboot after an edit of its script) finds "none" and skips
[ -e "$GS_ROOT$ROLLOUT_FILE" ] || printf 'none\n' | write_file "$ROLLOUT_FILE" 0644 >&2 || true
inventory=$(nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total --format=csv,noheader)
# what this bootstrap installed and verified, and its GPUs (UUID@bus id), where the node has no record yet (lib.sh record_on_node)
if [ "$GS_ANNOTATE" = 1 ]; then
  toolkit=$(pkg_version nvidia-container-toolkit)
  kubelet=$(pkg_version kubelet)
  driver=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
  fm=""
  [ "$GS_NVSWITCH_COUNT" -gt 0 ] && fm="$driver"
  gpus=$(awk -F ', ' 'NF >= 4 { printf "%s%s@%s", (n++ ? "," : ""), $3, $4 }' <<<"$inventory")
  record_on_node absent "${EXPECTED_ANNOTATION}driver=${driver}" "${EXPECTED_ANNOTATION}fabricmanager=${fm}" \
    "${EXPECTED_ANNOTATION}toolkit=${toolkit%%-*}" "${EXPECTED_ANNOTATION}kubernetes=${kubelet%%-*}" "${GPU_UUIDS_ANNOTATION}=${gpus}" >&2 \
    || log "node ${GS_NODE_NAME}: the API server did not answer with the kubelet's credentials, so the GPUs" \
        "and versions are not recorded on the Node (gpu-stack doctor says so; docs/OPERATIONS.md, Drift)" >&2
fi
echo "--- gpu-inventory ---"
printf '%s\n' "$inventory"
echo "--- nvidia-smi ---"
nvidia-smi
