# shellcheck shell=bash
# Phase: wait-ssh. The guest answers SSH (the connection retries the dial) and
# cloud-init has finished, so apt/dnf are not locked by first-boot work.
# `cloud-init status --wait` returns once cloud-init is neither running nor
# about to run; its exit status is 0 for success, 2 for "recoverable error"
# (since cloud-init 23.4: an error that did not stop cloud-init, such as a
# deprecated key or a module that failed) and 1 for "unrecoverable error"
# (before 23.4: any error) (canonical/cloud-init doc/rtd/explanation/
# return_codes.rst and failure_states.rst, cloudinit/cmd/status.py
# handle_status_args). Every one of them means first boot is over, which is all
# this phase waits for; a non-zero status is logged with cloud-init's own
# summary, and what it broke surfaces in the phase that needs it.
if command -v cloud-init >/dev/null 2>&1; then
  cloud_init_rc=0
  cloud-init status --wait >/dev/null 2>&1 || cloud_init_rc=$?
  case "$cloud_init_rc" in
    0) ;;
    2) log "cloud-init finished with recoverable errors (exit 2); see /var/log/cloud-init.log:"
       cloud-init status --long 2>/dev/null | sed 's/^/  /' || true ;;
    *) log "cloud-init finished with an error (exit ${cloud_init_rc}); see /var/log/cloud-init.log and /var/log/cloud-init-output.log:"
       cloud-init status --long 2>/dev/null | sed 's/^/  /' || true ;;
  esac
fi
log "ready, boot $(cat /proc/sys/kernel/random/boot_id)"
