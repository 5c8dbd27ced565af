# shellcheck shell=bash
# Upgrade phase: upgrade-reboot (on a drained node). Reboots when the loaded
# kernel module differs from the installed one (a new driver), with sshd
# stopped first so upgrade-verify, whose connection retries with the pinned
# host key, reaches the guest only on the new boot. Otherwise nothing.
loaded=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
installed=$(modinfo -F version nvidia 2>/dev/null || true)
if [ -n "$installed" ] && [ "$loaded" != "$installed" ]; then
  reboot_now "nvidia ${loaded:-(none)} is loaded, ${installed} is installed: rebooting ${GS_NODE_NAME}"
fi
echo "GPU_STACK_REBOOT=0"
log "nvidia ${loaded:-(none)} loaded and installed: no reboot"
