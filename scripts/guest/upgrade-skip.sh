# shellcheck shell=bash
# Upgrade prelude of the node's own steps (upgrade-driver, -runtime,
# -kubernetes, -reboot; render/guest_scripts.py BODIES): when upgrade-check
# found the node at the configured versions (ROLLOUT_FILE "none", lib.sh), the
# step changes nothing: no package, no kubeadm, no reboot. A gpu-stack release
# that changed the step's script alone lands here; what it changes for a node
# at its versions the bootstrap phase re-applies (its `update` is the version
# gate, scripts/guest/upgrade-gate.sh).
if ! rollout_pending; then
  log "upgrade-check found ${GS_NODE_NAME:-this node} at the configured versions: nothing to roll out, nothing changed"
  if [ "$GS_PHASE" = upgrade-reboot ]; then
    echo "GPU_STACK_REBOOT=0"
  fi
  exit 0
fi
