# shellcheck shell=bash
# Phase: burn-in (issue 27; runs kubectl on the stack's first VM). The gate before a GPU node takes work:
# its burn-in Jobs (render/k8s_manifests.burnin_jobs: DCGM diagnostics, `nvidia-smi topo -p2p r`, an NCCL
# all-reduce over all its GPUs) run on it while it is cordoned, and it is uncordoned only when all pass.
# GS_BURNIN_MODE deploy: the first deploy, after the readiness gate; the node is cordoned here (recorded
# in CORDON_ANNOTATION, as drain does) and uncordoned here on success. GS_BURNIN_MODE upgrade: an upgrade
# wave, after upgrade-verify and before uncordon; drain cordoned the node, and nothing runs when
# upgrade-check found nothing to roll out. On any failure the node stays cordoned (and keeps its taints),
# the command fails, later waves do not start, and the message names the node, the GPU (index, UUID, PCI
# address) or link, the failing test and what diagnoses it. The same verdict, from the same output, is
# computed by render/burnin.evaluate for the `burnIn` stack output (tests/test_guest_scripts.py runs both
# on the real captures). Prints each Job's output under `--- burn-in <job> ---`.
use_cluster_kubeconfig "$GS_KUBECONFIG_STDIN"
node="$GS_NODE_NAME"
ns="$GS_BURNIN_NAMESPACE"
deadline=$(( $(date +%s) + GS_GATE_TIMEOUT ))
BURNIN_ANNOTATION=gpu-stack.io/burn-in

if [ "$GS_BURNIN_MODE" = upgrade ]; then
  rollout=$(node_annotation "$node" "$ROLLOUT_ANNOTATION") \
    || die "node ${node}, phase burn-in: the API server does not answer; seed 003 step 1: kubectl get nodes"
  if [ "$rollout" = none ]; then
    log "nothing was rolled out on ${node}: no burn-in"
    echo "--- burn-in ---"
    echo "node ${node} skipped (nothing rolled out)"
    exit 0
  fi
else
  # A node that already runs GPU pods (other than gpu-stack's own: GS_OWN_NAMESPACES) is serving: a fleet that upgrades gpu-stack to the release that brought
  # the gate gets this phase as a new resource on nodes that carry work. Its Jobs could not get the node's GPUs,
  # and a cordon would take it out of service for no change, so it is left alone; it burns in at its next
  # upgrade wave. (--field-selector spec.nodeName and status.phase are pod field selectors; a map printed by
  # jsonpath is its JSON: kubectl's reference, "JSONPath Support".)
  busy=$(kubectl get pods -A --field-selector "spec.nodeName=${node},status.phase=Running" \
           -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.spec.containers[*].resources.requests}{"\n"}{end}') \
    || die "node ${node}, phase burn-in: the API server does not answer; seed 003 step 1: kubectl get nodes"
  if awk -v own=" ${GS_OWN_NAMESPACES} " 'index(own, " " $1 " ") == 0 && /nvidia\.com\//' <<<"$busy" | grep -q .; then
    log "${node} already runs GPU pods: no burn-in now, it burns in at its next upgrade wave"
    echo "--- burn-in ---"
    echo "node ${node} skipped (already serving)"
    exit 0
  fi
  if [ "$(kubectl get node "$node" -o jsonpath='{.spec.unschedulable}' 2>/dev/null || true)" != true ]; then
    # the record first (drain.sh): a run that stops between the two never leaves a cordon it cannot release
    kubectl annotate --overwrite node "$node" "${CORDON_ANNOTATION}=true" >/dev/null
    kubectl cordon "$node" >/dev/null
    changed "cordoned ${node} for its burn-in"
  fi
fi
kubectl annotate --overwrite node "$node" "${BURNIN_ANNOTATION}=running" >/dev/null

# the previous run's Jobs go first: a Job's pod template cannot change, and its old logs must not count
kubectl -n "$ns" delete job -l "gpu-stack.io/burn-in-node=${node}" --ignore-not-found --wait=true >/dev/null 2>&1 || true
printf '%s\n' "$GS_BURNIN_MANIFEST" | kubectl apply -f - >/dev/null \
  || die "node ${node}, phase burn-in: kubectl apply of the burn-in Jobs failed; it stays cordoned"

job_state() { kubectl -n "$ns" get job "$1" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' 2>/dev/null || true; }
failures=()
fail() { failures+=("${node}: $*"); }

# gpu_label INDEX: "GPU i (UUID, PCI address)" from the dcgm Job's inventory, or "GPU i".
inventory=""
gpu_label() {
  local line
  line=$(awk -F', *' -v i="$1" '$1 == i { print $2 " " $3; exit }' <<<"$inventory")
  if [ -n "$line" ]; then printf 'GPU %s (%s, %s)' "$1" "${line%% *}" "${line#* }"; else printf 'GPU %s' "$1"; fi
}
section() { awk -v s="--- $1 ---" '$0 == s { on = 1; next } /^--- .* ---$/ { on = 0 } on' <<<"$2"; }

DIAG_GPU="doctor guest driver section; seed 003 §0 step 2 (driver health: nvidia-smi, dmesg Xid)"
DIAG_FM="doctor guest driver: Fabric Manager active and fabric state (CUDA 'system not yet initialized'); seed 003 §0 step 2"
DIAG_BW="doctor guest driver: NVLink and fabric state; nvidia-smi topo -m in the guest (seed 003 §0 step 2)"
DIAG_P2P="doctor hypervisor checks (ACS, IOMMU groups) and guest driver: NVLink; nvidia-smi topo -p2p r and topo -m in the guest"

for job in $GS_BURNIN_JOBS; do
  until grep -qE '(^| )(Complete|Failed) ' <<<"$(job_state "$job") "; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail "burn-in Job ${ns}/${job} did not finish in ${GS_GATE_TIMEOUT}s (burnIn.timeoutSeconds); seed 003 step 3 (pod events):" \
        "kubectl -n ${ns} describe pod -l job-name=${job} (Insufficient GPUs: something else holds them)"
      break
    fi
    sleep "$GS_GATE_INTERVAL"
  done
  out=$(kubectl -n "$ns" logs "job/${job}" 2>&1 || true)
  echo "--- burn-in ${job} ---"
  printf '%s\n' "$out"
  if [ -n "$(section gpus "$out")" ]; then inventory=$(section gpus "$out"); fi

  if grep -qxF -- '--- dcgm ---' <<<"$out"; then
    dcgm=$(section dcgm "$out")
    if ! grep -q '^| Diagnostic' <<<"$dcgm"; then
      fail "dcgmi diag printed no result table ($(grep -m1 . <<<"$dcgm" || echo 'no output')); ${DIAG_GPU}"
    else
      # a result row: the name cell, then a result cell starting with Fail; DCGM 4.x also prints `GPUn: Fail` lines
      while IFS='|' read -r _ name result _; do
        name=$(sed 's/^ *//; s/ *$//' <<<"$name")
        # its Warning/Error rows, the hard-wrapped cells rejoined (DCGM wraps at 45 characters, render/burnin.py)
        text=$(awk -v n="$name" 'index($0, "| " n " ") == 1 { on = 1; next }
          on && /^\| [A-Za-z]/ { if ($0 ~ /^\| (Warning|Error) /) { w = 1 } else if ($0 ~ /^\| Info /) { w = 0 } else exit }
          on && w { printf "%s", substr($0, 31, 45) }' <<<"$dcgm")
        gpus=$(grep -oE 'GPU [0-9]+' <<<"$text" | awk '{ print $2 }' | sort -un | tr '\n' ' ')
        where="all GPUs"
        if [ -n "$gpus" ] && ! grep -q 'Fail - All' <<<"$result"; then
          where=""
          for g in $gpus; do where="${where:+${where}, }$(gpu_label "$g")"; done
        fi
        diag="$DIAG_GPU"
        grep -q 'not yet initialized\|cuInit' <<<"$text" && diag="$DIAG_FM"
        grep -qi 'persistence' <<<"$name" && diag="doctor guest driver: persistence mode; seed 003 §0 step 2"
        fail "${where}: dcgmi diag \`${name}\` Fail; ${diag}"
      done < <(grep -E '^\| [^|]*[^ |][^|]*\| Fail' <<<"$dcgm")
      while read -r g; do
        fail "$(gpu_label "$g"): dcgmi diag Fail (per-GPU line); ${DIAG_GPU}"
      done < <(grep -oE 'GPU[0-9]+: Fail' <<<"$dcgm" | sed 's/^GPU//; s/: Fail$//')
    fi
    if [ "$GS_P2P_REQUIRED" = 1 ]; then
      # the `topo -p2p r` matrix: every cell off the diagonal must be OK on a node whose GPUs the host wires by NVLink
      bad=$(section p2p "$out" | awk '$1 ~ /^GPU[0-9]+$/ && $2 !~ /^GPU/ && NF > 2 {
          rows++; for (j = 2; j <= NF; j++) if ($j != "X" && $j != "OK") { print $1, "GPU" j - 2, $j; n++ } }
        END { if (!rows) print "none" }')
      if [ "$bad" = none ]; then
        fail "nvidia-smi topo -p2p r printed no matrix; ${DIAG_P2P}"
      elif [ -n "$bad" ]; then
        read -r a b status <<<"$(head -n1 <<<"$bad")"
        fail "link $(gpu_label "${a#GPU}") -> $(gpu_label "${b#GPU}"): P2P read ${status} ($(wc -l <<<"$bad") GPU pairs not OK;" \
          "CNS: ACS or no ATS in the guest, TNS: the guest's PCIe topology, NS: NVLink or Fabric Manager); ${DIAG_P2P}"
      fi
    fi
  fi

  if grep -qxF -- '--- nccl ---' <<<"$out"; then
    nccl=$(section nccl "$out")
    err=$(grep -m1 -E 'Test (CUDA |NCCL )?failure|NCCL WARN' <<<"$nccl" || true)
    # nccl-tests v2.19.6 src/util.cu: the header names the columns; the busbw of the LARGEST size, out of place
    read -r size busbw wrong <<<"$(awk '
      /^ *#/ && /busbw/ && /size/ {
        sub(/^ *# */, ""); b = 0; w1 = 0; w2 = 0
        for (i = 1; i <= NF; i++) { if ($i == "busbw" && !b) b = i; if ($i == "#wrong") { if (!w1) w1 = i; else if (!w2) w2 = i } }
        cols = NF; next
      }
      cols && $1 ~ /^[0-9]+$/ && NF >= cols {
        if ($1 + 0 >= max) { max = $1 + 0; size = $1; bw = $b }
        if (w1 && $w1 ~ /^[0-9]+$/) bad += $w1
        if (w2 && $w2 ~ /^[0-9]+$/) bad += $w2
      }
      END { if (max) print size, bw, bad + 0 }' <<<"$nccl")"
    if [ -n "$err" ]; then
      diag="$DIAG_GPU"
      grep -q 'not yet initialized' <<<"$err" && diag="$DIAG_FM"
      fail "all_reduce_perf failed: ${err}; ${diag}"
    elif [ -z "$size" ]; then
      fail "all_reduce_perf printed no result table; ${DIAG_GPU}"
    fi
    if [ -n "$wrong" ] && [ "$wrong" != 0 ]; then
      fail "all_reduce_perf found ${wrong} wrong elements (data corruption across GPUs); ${DIAG_GPU}"
    fi
    if [ -n "$size" ] && [ -n "$GS_EXPECTED_BUSBW" ] \
        && awk -v m="$busbw" -v e="$GS_EXPECTED_BUSBW" -v f="$GS_MIN_FRACTION" 'BEGIN { exit !(m < f * e) }'; then
      fail "NVLink/PCIe fabric: all_reduce_perf busbw ${busbw} GB/s at ${size} B (the largest size) is below" \
        "${GS_MIN_FRACTION} x expected ${GS_EXPECTED_BUSBW} GB/s (${GS_EXPECTED_ORIGIN}); ${DIAG_BW}"
    fi
    if [ "$GS_P2P_REQUIRED" = 1 ]; then
      shm=$(grep -E 'NCCL INFO Channel [0-9/]+ : [0-9]+\[[0-9]+\] -> [0-9]+\[[0-9]+\].* via SHM/' <<<"$nccl" || true)
      if [ -n "$shm" ]; then
        read -r src dst <<<"$(sed -E 's/.* : [0-9]+\[([0-9]+)\] -> [0-9]+\[([0-9]+)\].*/\1 \2/' <<<"$(head -n1 <<<"$shm")")"
        fail "link $(gpu_label "$src") -> $(gpu_label "$dst"): NCCL chose SHM instead of P2P ($(wc -l <<<"$shm") channels): P2P is off in the guest; ${DIAG_P2P}"
      fi
    fi
  fi
  case " $(job_state "$job") " in
    *" Failed "*) [ "${#failures[@]}" -gt 0 ] || fail "burn-in Job ${ns}/${job} failed; seed 003 step 3 (pod events): kubectl -n ${ns} describe pod -l job-name=${job}" ;;
  esac
done

echo "--- burn-in ---"
if [ "${#failures[@]}" -gt 0 ]; then
  kubectl annotate --overwrite node "$node" "${BURNIN_ANNOTATION}=failed" >/dev/null || true
  kubectl label --overwrite node "$node" "${BURNIN_ANNOTATION}=failed" >/dev/null || true
  printf 'FAIL %s\n' "${failures[@]}"
  die "node ${node} failed its burn-in and stays cordoned (and keeps its taints):" \
    "${failures[0]}$([ "${#failures[@]}" -gt 1 ] && printf ' (and %d more above)' $(( ${#failures[@]} - 1 ))). Fix it, then run pulumi up again;" \
    "docs/OPERATIONS.md, Burn-in"
fi
kubectl annotate --overwrite node "$node" "${BURNIN_ANNOTATION}=passed" >/dev/null
kubectl label --overwrite node "$node" "${BURNIN_ANNOTATION}=passed" >/dev/null
echo "PASS node ${node}"
if [ "$GS_BURNIN_MODE" = deploy ] && [ -n "$(node_annotation "$node" "$CORDON_ANNOTATION" 2>/dev/null || true)" ]; then
  kubectl uncordon "$node" >/dev/null
  kubectl annotate node "$node" "${CORDON_ANNOTATION}-" >/dev/null
  changed "uncordoned ${node}: burn-in passed"
fi
