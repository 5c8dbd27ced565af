# shellcheck shell=bash
# Upgrade prelude (EL): dnf's versionlock keeps a locked package at its version,
# so a package whose configured version differs from the installed one is
# unlocked first; the phase below installs it pinned and locks it again.
# Ubuntu needs nothing: pkg_install allows changing held packages.
# GS_UNLOCK: "name=version ..." as configured.
if [ "$(os_id)" = rhel ] && [ -n "${GS_UNLOCK:-}" ]; then
  unlock_locked=$(dnf versionlock list 2>/dev/null || true)
  for unlock_entry in $GS_UNLOCK; do
    unlock_name="${unlock_entry%%=*}"
    unlock_want="${unlock_entry#*=}"
    grep -q "^${unlock_name}-[0-9]" <<<"$unlock_locked" || continue  # NAME-EPOCH:VERSION (lib.sh pkg_hold)
    case "$(pkg_version "$unlock_name")" in
      "$unlock_want"|"$unlock_want"-*|"$unlock_want".*) ;;
      *) dnf versionlock delete "$unlock_name" >/dev/null; changed "unlocked ${unlock_name} for ${unlock_want}" ;;
    esac
  done
fi
