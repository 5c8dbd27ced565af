# shellcheck shell=bash
# Phase: wait-ssh. The guest answers SSH (the connection retries the dial) and
# cloud-init has finished, so apt/dnf are not locked by first-boot work.
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init status --wait >/dev/null 2>&1 || log "cloud-init reported errors; see /var/log/cloud-init-output.log"
fi
log "ready, boot $(cat /proc/sys/kernel/random/boot_id)"
