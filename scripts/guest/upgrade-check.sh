# shellcheck shell=bash
# Upgrade phase: upgrade-check (on the node, before anything is drained or
# changed). Decides from the node itself whether anything must change: the
# loaded (and installed) NVIDIA driver, Fabric Manager on NVSwitch systems, the
# NVIDIA Container Toolkit, kubeadm and kubelet (and, on the control plane, the
# API server) against the configured versions. pulumi-command re-runs this path
# whenever the text of a phase changes, which every gpu-stack release that
# edits lib.sh or an upgrade script does; when the versions already match,
# the decision is "none" and drain, the steps, the reboot and uncordon change
# nothing (lib.sh ROLLOUT_FILE, ROLLOUT_ANNOTATION). Otherwise it refuses what
# kubeadm cannot do (a Kubernetes downgrade, a jump of more than one minor),
# naming the config key, and records the GPUs by UUID so upgrade-verify can
# tell that every GPU came back after the change.
record=/var/lib/gpu-stack/upgrade/gpus.before

# minor_of 1.32.4 -> 32
minor_of() { local v="${1#v}"; v="${v#*.}"; printf '%s' "${v%%.*}"; }
# version_is INSTALLED WANTED: the installed package version is the wanted one (any packaging revision).
version_is() { case "$1" in "$2"|"$2"-*|"$2".*) return 0 ;; *) return 1 ;; esac; }

if [ -n "$GS_K8S_VERSION" ]; then
  have=$(pkg_version kubeadm)
  have="${have%%-*}"
  if [ -n "$have" ] && [ "$have" != "$GS_K8S_VERSION" ]; then
    newest=$(printf '%s\n%s\n' "$have" "$GS_K8S_VERSION" | sort -V | tail -n1)
    if [ "$newest" = "$have" ]; then
      die "gpu-stack:kubernetes.version: ${GS_K8S_VERSION} is older than the ${have} that ${GS_NODE_NAME} runs; kubeadm cannot downgrade a cluster: set kubernetes.version back to ${have} or newer"
    fi
    have_minor=$(minor_of "$have")
    want_minor=$(minor_of "$GS_K8S_VERSION")
    if [ $((want_minor - have_minor)) -gt 1 ]; then
      die "gpu-stack:kubernetes.version: ${have} to ${GS_K8S_VERSION} skips a minor on ${GS_NODE_NAME}; kubeadm upgrades one minor at a time: set 1.$((have_minor + 1)).x first, then ${GS_K8S_VERSION}"
    fi
  fi
fi

# what differs, as "what have->want" (the same comparisons upgrade-verify makes afterwards)
differs=()
loaded=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
installed=$(modinfo -F version nvidia 2>/dev/null || true)
if [ "$loaded" != "$GS_DRIVER_VERSION" ]; then
  differs+=("driver ${loaded:-none}->${GS_DRIVER_VERSION}")
elif [ -n "$installed" ] && [ "$installed" != "$loaded" ]; then
  differs+=("driver module ${installed} installed, ${loaded} loaded->reboot")
fi
if [ "$GS_NVSWITCH_COUNT" -gt 0 ] && ! version_is "$(pkg_version "$GS_FM_PROBE")" "$GS_DRIVER_VERSION"; then
  fm=$(pkg_version "$GS_FM_PROBE")
  differs+=("${GS_FM_PROBE} ${fm:-none}->${GS_DRIVER_VERSION}")
fi
# no GS_TOOLKIT_VERSION: a VM without GPUs, which gets no toolkit
if [ -n "$GS_TOOLKIT_VERSION" ]; then
  toolkit=$(pkg_version nvidia-container-toolkit)
  version_is "$toolkit" "$GS_TOOLKIT_VERSION" || differs+=("nvidia-container-toolkit ${toolkit:-none}->${GS_TOOLKIT_VERSION}")
fi
if [ -n "$GS_K8S_VERSION" ]; then
  for pkg in kubeadm kubelet; do
    v=$(pkg_version "$pkg")
    version_is "$v" "$GS_K8S_VERSION" || differs+=("${pkg} ${v:-none}->${GS_K8S_VERSION}")
  done
  if [ "$GS_CONTROL_PLANE" = 1 ]; then
    apiserver=$(sed -n 's/.*kube-apiserver:v\([0-9][0-9.]*\).*/\1/p' "$GS_ROOT/etc/kubernetes/manifests/kube-apiserver.yaml" 2>/dev/null | head -n1 || true)
    [ -z "$apiserver" ] || [ "$apiserver" = "$GS_K8S_VERSION" ] || differs+=("kube-apiserver ${apiserver}->${GS_K8S_VERSION}")
  fi
fi
if [ "${#differs[@]}" -eq 0 ]; then
  decision=none
else
  decision=$(IFS=';'; printf '%s' "${differs[*]}" | sed 's/;/; /g')
fi

if [ "$decision" != none ] && [ "$GS_UNDRAINED" = 1 ]; then
  die "node ${GS_NODE_NAME}, phase upgrade-check: ${decision}. kubernetes.mode existing: gpu-stack has no kubectl here and" \
      "cannot drain ${GS_NODE_NAME}, and this upgrade may reboot it. Drain it yourself (kubectl drain ${GS_NODE_NAME}" \
      "--ignore-daemonsets --delete-emptydir-data), set gpu-stack:fleet.drainedExternally true, run pulumi up, then uncordon it"
fi

printf '%s\n' "$decision" | write_file "$ROLLOUT_FILE" 0644 || true
if [ "$GS_ANNOTATE" = 1 ]; then
  # the kubelet's own credentials: NodeRestriction lets a node change its own Node's annotations
  # (only its taints, some labels, configSource and ownerReferences are refused: kubernetes
  # plugin/pkg/admission/noderestriction/admission.go, admitNode)
  export KUBECONFIG="$GS_ROOT/etc/kubernetes/kubelet.conf"
  [ -s "$KUBECONFIG" ] || die "node ${GS_NODE_NAME}, phase upgrade-check: no /etc/kubernetes/kubelet.conf: this node has not joined the cluster"
  current=$(node_annotation "$GS_NODE_NAME" "$ROLLOUT_ANNOTATION") \
    || die "node ${GS_NODE_NAME}, phase upgrade-check: cannot read node ${GS_NODE_NAME} from the API server with the kubelet's credentials; seed 003 step 1: kubectl get nodes, journalctl -u kubelet"
  if [ "$current" != "$decision" ]; then
    kubectl annotate --overwrite node "$GS_NODE_NAME" "${ROLLOUT_ANNOTATION}=${decision}" >/dev/null
    changed "annotated ${ROLLOUT_ANNOTATION}=${decision}"
  fi
fi

# the plan this node is meant to run, for the doctor and the drift check (lib.sh record_on_node)
if [ "$GS_ANNOTATE" = 1 ]; then
  fm_expected=""
  [ "$GS_NVSWITCH_COUNT" -gt 0 ] && fm_expected="$GS_DRIVER_VERSION"
  record_on_node overwrite "${EXPECTED_ANNOTATION}driver=${GS_DRIVER_VERSION}" "${EXPECTED_ANNOTATION}fabricmanager=${fm_expected}" \
    "${EXPECTED_ANNOTATION}toolkit=${GS_TOOLKIT_VERSION}" "${EXPECTED_ANNOTATION}kubernetes=${GS_K8S_VERSION}" \
    || die "node ${GS_NODE_NAME}, phase upgrade-check: cannot record the planned versions on node ${GS_NODE_NAME}" \
        "with the kubelet's credentials; seed 003 step 1: kubectl get nodes, journalctl -u kubelet"
fi

if [ "$decision" = none ]; then
  echo "GPU_STACK_ROLLOUT=none"
  log "${GS_NODE_NAME} runs the configured versions: nothing to roll out (no cordon, no drain, no reboot)"
  exit 0
fi
echo "GPU_STACK_ROLLOUT=${decision}"
log "to roll out on ${GS_NODE_NAME}: ${decision}"
if [ ! -s "$GS_ROOT$record" ] && [ "$GS_GPU_COUNT" -gt 0 ]; then
  if uuids=$(nvidia-smi --query-gpu=uuid --format=csv,noheader 2>/dev/null); then
    mkdir -p "$(dirname "$GS_ROOT$record")"
    printf '%s\n' "$uuids" | sort >"$GS_ROOT$record"
    log "recorded $(wc -l <"$GS_ROOT$record") GPUs by UUID before the upgrade"
  else
    log "nvidia-smi does not answer before the upgrade; upgrade-verify checks the GPU count (${GS_GPU_COUNT}) only"
  fi
fi
log "done"
