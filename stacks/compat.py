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

from stacks.types import version_tuple


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
    PluginRelease((0, 19), ((1, 27), (1, 34)), mig=True, time_slicing=True, helm_chart=True),
    PluginRelease((0, 20), ((1, 28), (1, 35)), mig=True, time_slicing=True, helm_chart=True),
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


KUBERNETES_NEWEST = "1.37.2"
"""The newest Kubernetes release the catalog knows: the latest release tag of the k8s.io/kubernetes Go module
(`go list -m -json k8s.io/kubernetes@latest`: v1.37.2, tagged 2026-10-27), read on KUBERNETES_CATALOG_READ."""
KUBERNETES_CATALOG_READ = "2026-12-06"


def kubernetes_version_warning(version: str) -> str | None:
    """A warning (not a refusal: a release newer than the catalog may well exist) for a version past the catalog."""
    if version_tuple(version) <= version_tuple(KUBERNETES_NEWEST):
        return None
    return (f"Kubernetes {version} is newer than {KUBERNETES_NEWEST}, the newest release the catalog knows "
            f"(read {KUBERNETES_CATALOG_READ}, stacks/compat.py); check that {version} exists "
            f"(https://kubernetes.io/releases/), or update KUBERNETES_NEWEST")
