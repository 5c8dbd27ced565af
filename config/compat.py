"""Which NVIDIA k8s-device-plugin release supports which Kubernetes, and what.

Seed 001 runs Kubernetes 1.23.17; the then-current plugin (0.17.x) did not work
there and 0.11 did. Seed 003: MIG needs the plugin >= 0.12 and time-slicing
>= 0.13. The Kubernetes windows are the releases each plugin version was built
and tested against (its go.mod k8s.io/kubelet line and release notes), widened
by one minor on each side where the field notes show it working. Config that
falls outside the table is refused with the versions that would work.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.types import version_tuple


@dataclass(frozen=True)
class PluginRelease:
    minor: tuple[int, int]
    kubernetes: tuple[tuple[int, int], tuple[int, int]]  # inclusive (min, max) minor
    mig: bool
    time_slicing: bool
    helm_chart: bool


DEVICE_PLUGIN_RELEASES: tuple[PluginRelease, ...] = (
    PluginRelease((0, 11), ((1, 18), (1, 24)), mig=False, time_slicing=False, helm_chart=True),
    PluginRelease((0, 12), ((1, 19), (1, 25)), mig=True, time_slicing=False, helm_chart=True),
    PluginRelease((0, 13), ((1, 20), (1, 26)), mig=True, time_slicing=True, helm_chart=True),
    PluginRelease((0, 14), ((1, 22), (1, 28)), mig=True, time_slicing=True, helm_chart=True),
    PluginRelease((0, 15), ((1, 23), (1, 29)), mig=True, time_slicing=True, helm_chart=True),
    PluginRelease((0, 16), ((1, 24), (1, 30)), mig=True, time_slicing=True, helm_chart=True),
    PluginRelease((0, 17), ((1, 25), (1, 32)), mig=True, time_slicing=True, helm_chart=True),
    PluginRelease((0, 18), ((1, 26), (1, 33)), mig=True, time_slicing=True, helm_chart=True),
    # 0.19 and 0.20: go.mod at tags v0.19.0 (k8s.io/kubelet v0.35.2) and v0.20.0 (k8s.io/kubelet v0.36.3),
    # NVIDIA/k8s-device-plugin, read 2026-12-06; widened by one minor as above (0.17: v0.31.1 -> 1.32, 0.18: v0.32.3 -> 1.33).
    PluginRelease((0, 19), ((1, 27), (1, 36)), mig=True, time_slicing=True, helm_chart=True),
    PluginRelease((0, 20), ((1, 28), (1, 37)), mig=True, time_slicing=True, helm_chart=True),
)


@dataclass(frozen=True)
class OperatorRelease:
    minor: tuple[int, int]
    kubernetes: dict[str, tuple[tuple[int, int], tuple[int, int]]]  # guest OS ("ubuntu 24.04") -> inclusive minors
    source: str


GPU_OPERATOR_RELEASES: tuple[OperatorRelease, ...] = (
    # The "Kubernetes" column of the bare-metal / GPU-passthrough table in gpu-operator/platform-support.rst,
    # NVIDIA/cloud-native-docs commit 52dcb7b8d956784344e241df476de17094a4574c (2026-08-21; versions1.json: 26.7
    # preferred): Ubuntu 24.04 1.32---1.36; Ubuntu 22.04, RHEL 9.x and Rocky 9.7 1.33---1.36.
    OperatorRelease((26, 7), {"ubuntu 24.04": ((1, 32), (1, 36)), "ubuntu 22.04": ((1, 33), (1, 36)),
                              "rhel 9": ((1, 33), (1, 36))},
                    "NVIDIA/cloud-native-docs gpu-operator/platform-support.rst (26.7)"),
)


def _fmt(minor: tuple[int, int]) -> str:
    return f"{minor[0]}.{minor[1]}"


def plugin_release(version: str) -> PluginRelease | None:
    v = version_tuple(version)[:2]
    return next((r for r in DEVICE_PLUGIN_RELEASES if r.minor == v), None)


def device_plugin_problems(plugin_version: str, kubernetes_version: str, *, mig: bool, time_slicing: bool) -> list[tuple[str, str]]:
    """(config key suffix, message) for every way this combination is unsupported."""
    known = ", ".join(_fmt(r.minor) for r in DEVICE_PLUGIN_RELEASES)
    release = plugin_release(plugin_version)
    if release is None:
        return [("version", f"device plugin {plugin_version} is not in the compatibility table; known minors: {known}")]
    problems: list[tuple[str, str]] = []
    k8s = version_tuple(kubernetes_version)[:2]
    lo, hi = release.kubernetes
    if not lo <= k8s <= hi:
        fits = [_fmt(r.minor) for r in DEVICE_PLUGIN_RELEASES if r.kubernetes[0] <= k8s <= r.kubernetes[1]]
        problems.append((
            "version",
            f"device plugin {plugin_version} supports Kubernetes {_fmt(lo)} to {_fmt(hi)}, not {kubernetes_version}; "
            f"for Kubernetes {_fmt(k8s)} use {', '.join(fits) or 'none of the known releases'}",
        ))
    if time_slicing and not release.time_slicing:
        problems.append(("timeSlicing", f"time-slicing needs device plugin >= 0.13, not {plugin_version}"))
    if mig and not release.mig:
        problems.append(("migStrategy", f"MIG needs device plugin >= 0.12, not {plugin_version}"))
    return problems


def gpu_operator_problems(operator_version: str, kubernetes_version: str, guest_os: str | None) -> list[str]:
    """Why this GPU Operator release does not support this Kubernetes on this guest OS ("ubuntu 24.04"); [] when it does.

    guest_os None (mode existing without a guest block): the widest window of any OS."""
    v = version_tuple(operator_version)[:2]
    release = next((r for r in GPU_OPERATOR_RELEASES if r.minor == v), None)
    if release is None:
        known = ", ".join(f"v{_fmt(r.minor)}" for r in GPU_OPERATOR_RELEASES)
        return [f"GPU Operator {operator_version} is not in the compatibility table (config/compat.py); known: {known}"]
    k8s = version_tuple(kubernetes_version)[:2]
    if guest_os is not None and guest_os in release.kubernetes:
        lo, hi = release.kubernetes[guest_os]
        where = f"on {guest_os}"
    else:
        lo, hi = min(w[0] for w in release.kubernetes.values()), max(w[1] for w in release.kubernetes.values())
        where = "on any OS it lists"
    if lo <= k8s <= hi:
        return []
    return [f"GPU Operator {operator_version} supports Kubernetes {_fmt(lo)} to {_fmt(hi)} {where}, not {kubernetes_version} "
            f"({release.source}); pin a Kubernetes version in that range"]


KUBERNETES_NEWEST = "1.37.2"
"""The newest Kubernetes release the catalog knows: the latest release tag of the k8s.io/kubernetes Go module
(`go list -m -json k8s.io/kubernetes@latest`: v1.37.2, tagged 2026-10-27), read on KUBERNETES_CATALOG_READ."""
KUBERNETES_CATALOG_READ = "2026-12-06"


def kubernetes_version_warning(version: str) -> str | None:
    """A warning (not a refusal: a release newer than the catalog may well exist) for a version past the catalog."""
    if version_tuple(version) <= version_tuple(KUBERNETES_NEWEST):
        return None
    return (f"Kubernetes {version} is newer than {KUBERNETES_NEWEST}, the newest release the catalog knows "
            f"(read {KUBERNETES_CATALOG_READ}, config/compat.py); check that {version} exists "
            f"(https://kubernetes.io/releases/), or update KUBERNETES_NEWEST")
