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
#
# The wait is bounded: `--wait` polls for as long as the status is "not
# started" ("not run" before 24.1) or "running", with no limit of its own, and
# also retries a failing `systemctl show-environment` forever (cloudinit/cmd/
# status.py at tag 26.2: handle_status_args, query_systemctl), so on a guest
# where cloud-init will never run this boot it never returns. A disabled
# cloud-init ("status: disabled": by /etc/cloud/cloud-init.disabled, the kernel
# command line, or the generator when ds-identify finds no datasource) has
# nothing to wait for and is logged instead. timeout(1) (coreutils) exits 124
# when the time ran out (137 when TERM was not enough and -k sent KILL).
cloud_init_status() {
  timeout 60 cloud-init status 2>/dev/null | sed -n 's/^status: //p' | head -n 1 || true
}
if command -v cloud-init >/dev/null 2>&1; then
  case "$(cloud_init_status)" in
    disabled)
      log "cloud-init is disabled on ${GS_VM_NAME} (cloud-init status: disabled); not waiting for it" ;;
    *)
      cloud_init_rc=0
      timeout -k 10 "$GS_CLOUD_INIT_TIMEOUT" cloud-init status --wait >/dev/null 2>&1 || cloud_init_rc=$?
      case "$cloud_init_rc" in
        0) ;;
        2) log "cloud-init finished with recoverable errors (exit 2); see /var/log/cloud-init.log:"
           cloud-init status --long 2>/dev/null | sed 's/^/  /' || true ;;
        124|137) die "cloud-init on VM ${GS_VM_NAME} has not finished after ${GS_CLOUD_INIT_TIMEOUT}s (cloud-init status: $(cloud_init_status));" \
            "see /var/log/cloud-init.log, or disable cloud-init in an image that does not use it (touch /etc/cloud/cloud-init.disabled)" ;;
        *) log "cloud-init finished with an error (exit ${cloud_init_rc}); see /var/log/cloud-init.log and /var/log/cloud-init-output.log:"
           cloud-init status --long 2>/dev/null | sed 's/^/  /' || true ;;
      esac ;;
  esac
fi
log "ready, boot $(cat /proc/sys/kernel/random/boot_id)"
