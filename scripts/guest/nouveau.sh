# shellcheck shell=bash
# Phase: nouveau. Blacklist it, rebuild the initramfs, unload it without a
# reboot when possible; otherwise reboot once. Never reboots when nouveau is
# already absent. When it reboots it stops sshd first, so the next phase
# (nouveau-check, whose connection retries) reaches the guest only after it.
# The file's two lines and the initramfs tools are what nvidia-installer itself does to
# disable nouveau (NVIDIA/nvidia-installer 590.48.01: misc.c writes "blacklist nouveau" and
# "options nouveau modeset=0" into /etc/modprobe.d; initramfs.c rebuilds with
# `dracut --force` or `update-initramfs -u`).
family=$(os_id)
if write_file /etc/modprobe.d/blacklist-nouveau.conf 0644 <<'CONF'
blacklist nouveau
options nouveau modeset=0
CONF
then
  if [ "$family" = ubuntu ]; then
    update-initramfs -u
  else
    dracut -f
  fi
  changed "initramfs rebuilt without nouveau"
fi

if module_loaded nouveau; then
  if modprobe -r nouveau 2>/dev/null; then
    changed "nouveau unloaded"
  else
    reboot_now "nouveau is in use (console); rebooting once"
  fi
fi
echo "GPU_STACK_REBOOT=0"
log "done (changed=${GS_CHANGED})"
