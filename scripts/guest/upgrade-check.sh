# shellcheck shell=bash
# Upgrade phase: upgrade-check (on the node, before anything is drained or
# changed). Refuses what kubeadm cannot do (a Kubernetes downgrade, a jump of
# more than one minor) against the version this node runs, naming the config
# key, and records the GPUs by UUID so upgrade-verify can tell that every GPU
# came back after the change. Changes nothing else.
record=/var/lib/gpu-stack/upgrade/gpus.before

if [ "$GS_UNDRAINED" = 1 ]; then
  die "node ${GS_NODE_NAME}, phase upgrade-check: kubernetes.mode existing: gpu-stack has no kubectl here and cannot drain ${GS_NODE_NAME}, and this upgrade may reboot it. Drain it yourself (kubectl drain ${GS_NODE_NAME} --ignore-daemonsets --delete-emptydir-data), set gpu-stack:fleet.drainedExternally true, run pulumi up, then uncordon it"
fi

# minor_of 1.32.4 -> 32
minor_of() { local v="${1#v}"; v="${v#*.}"; printf '%s' "${v%%.*}"; }

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
