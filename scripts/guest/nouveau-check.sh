# shellcheck shell=bash
# Phase: nouveau-check. Runs after nouveau, on the new boot if it rebooted.
if module_loaded nouveau; then
  die "nouveau is still loaded: check /etc/modprobe.d/blacklist-nouveau.conf and that the initramfs was rebuilt"
fi
log "nouveau absent, boot $(cat /proc/sys/kernel/random/boot_id)"
