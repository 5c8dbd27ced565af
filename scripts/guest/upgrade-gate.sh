# shellcheck shell=bash
# Version gate: the `update` of the driver, container-runtime and kubernetes
# phases (render/guest_scripts.py UPGRADE_MANAGED), inlined before the phase.
# When the node already runs the configured versions the phase below re-runs as
# usual (a registry mirror, a label, a rotated token). When a version differs,
# this stops here and changes nothing: the change belongs to the upgrade path
# (<vm>-upgrade-*: cordon, drain, pinned packages, reboot, verify, uncordon),
# which Pulumi runs next, one wave of nodes at a time.

# version_is INSTALLED WANTED: the installed package version is the wanted one (any packaging revision).
version_is() { case "$1" in "$2"|"$2"-*|"$2".*) return 0 ;; *) return 1 ;; esac; }

gate_differs=""
case "$GS_PHASE" in
  driver)
    gate_loaded=$(cat "$GS_ROOT/sys/module/nvidia/version" 2>/dev/null || true)
    if [ -n "$gate_loaded" ] && [ "$gate_loaded" != "$GS_DRIVER_VERSION" ]; then
      gate_differs="driver ${gate_loaded} loaded, ${GS_DRIVER_VERSION} configured"
    elif [ "$GS_NVSWITCH_COUNT" -gt 0 ] && pkg_installed "$GS_FM_PROBE" && ! version_is "$(pkg_version "$GS_FM_PROBE")" "$GS_DRIVER_VERSION"; then
      gate_differs="Fabric Manager $(pkg_version "$GS_FM_PROBE") installed, ${GS_DRIVER_VERSION} configured"
    fi
    ;;
  container-runtime)
    if pkg_installed nvidia-container-toolkit && ! version_is "$(pkg_version nvidia-container-toolkit)" "$GS_TOOLKIT_VERSION"; then
      gate_differs="nvidia-container-toolkit $(pkg_version nvidia-container-toolkit) installed, ${GS_TOOLKIT_VERSION} configured"
    fi
    ;;
  kubernetes)
    for gate_pkg in kubeadm kubelet; do
      if pkg_installed "$gate_pkg" && ! version_is "$(pkg_version "$gate_pkg")" "$GS_K8S_VERSION"; then
        gate_differs="${gate_pkg} $(pkg_version "$gate_pkg") installed, ${GS_K8S_VERSION} configured"
      fi
    done
    ;;
esac
if [ -n "$gate_differs" ]; then
  log "${gate_differs}: left to the upgrade path (${GS_NODE_NAME:-this node}'s upgrade-* commands, drained, in its wave); nothing changed here"
  exit 0
fi
