"""When support ends: Kubernetes minors, NVIDIA datacenter driver branches, and the last branch per GPU architecture.

Every row cites where it was read (on CATALOG_READ). `make plan` and the program warn when a pinned version is
past its end of support or within WARN_DAYS of it (support_warnings, with today's date injected so tests can pin
it); versions.json states the status relative to CATALOG_READ, so the plan's files stay byte-identical from one
day to the next. A driver branch newer than a GPU architecture's last branch is refused (stacks/checks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from config.types import version_tuple

CATALOG_READ = date(2026, 12, 6)
"""The day the rows below were read; versions.json's statuses are relative to it."""
WARN_DAYS = 90
"""Warn this many days before a pinned version's support ends."""
CHECKED_DCGM_EXPORTER = "4.5.3-4.8.2"
"""The dcgm-exporter release whose etc/default-counters.csv render/dcgm-counters.csv keeps whole (its copy:
tests/reference/dcgm-exporter-4.5.3-4.8.2.default-counters.csv; tests/test_dcgm_alerts.py checks both). The one
place it is spelled: the defaults (config/models.py), NEWEST below and render/dcgm_metrics.py read it from here."""

K8S_RELEASES = "https://kubernetes.io/releases/"
K8S_PATCH_HISTORY = "https://github.com/kubernetes/website/blob/main/data/releases/eol.yaml"
NV_620 = "https://docs.nvidia.com/datacenter/tesla/drivers/620/supported-drivers-and-cuda-toolkit-versions.html"
NV_615 = "https://docs.nvidia.com/datacenter/tesla/drivers/615/supported-drivers-and-cuda-toolkit-versions.html"
NV_ARCH = "https://docs.nvidia.com/datacenter/tesla/drivers/cuda-toolkit-driver-and-architecture-matrix.html"


@dataclass(frozen=True)
class Support:
    release: str          # "1.36" or "R580"
    designation: str      # "minor", "long-term support", "production", "new feature"
    ends: date | None     # None: no end announced
    ends_text: str        # as the source gives it ("June 2028", "2027-06-28")
    source: str


def _k8s(minor: str, ends: date, source: str = K8S_RELEASES) -> Support:
    return Support(minor, "minor", ends, ends.isoformat(), source + (f"{minor}/" if source == K8S_RELEASES else ""))


KUBERNETES_MINORS: dict[tuple[int, int], Support] = {
    # end of life per kubernetes.io/releases/1.XX (1.33 to 1.37, read 2026-12-06) and kubernetes/website
    # data/releases/eol.yaml, `endOfLifeDate` of each branch (1.23 to 1.32; the table kubernetes.io's patch-releases
    # page renders). About 14 months each: 12 plus 2 in maintenance mode.
    (1, 23): _k8s("1.23", date(2023, 2, 28), K8S_PATCH_HISTORY),
    (1, 24): _k8s("1.24", date(2023, 7, 28), K8S_PATCH_HISTORY),
    (1, 25): _k8s("1.25", date(2023, 10, 28), K8S_PATCH_HISTORY),
    (1, 26): _k8s("1.26", date(2024, 2, 28), K8S_PATCH_HISTORY),
    (1, 27): _k8s("1.27", date(2024, 7, 16), K8S_PATCH_HISTORY),
    (1, 28): _k8s("1.28", date(2024, 10, 22), K8S_PATCH_HISTORY),
    (1, 29): _k8s("1.29", date(2025, 2, 28), K8S_PATCH_HISTORY),
    (1, 30): _k8s("1.30", date(2025, 7, 15), K8S_PATCH_HISTORY),
    (1, 31): _k8s("1.31", date(2025, 11, 11), K8S_PATCH_HISTORY),
    (1, 32): _k8s("1.32", date(2026, 2, 28), K8S_PATCH_HISTORY),
    (1, 33): _k8s("1.33", date(2026, 6, 28)),
    (1, 34): _k8s("1.34", date(2026, 10, 27)),
    (1, 35): _k8s("1.35", date(2027, 2, 28)),   # maintenance mode from 2026-12-28
    (1, 36): _k8s("1.36", date(2027, 6, 28)),
    (1, 37): _k8s("1.37", date(2027, 10, 28)),
}

KUBERNETES_NEWEST_PATCH: dict[tuple[int, int], tuple[str, str]] = {
    # the newest patch seen of each supported minor, and where
    (1, 35): ("1.35.9", "kubernetes.io/releases/1.35 (2026-09-15)"),
    (1, 36): ("1.36.5", "go list -m -json k8s.io/kubernetes@v1.36.5: 2026-09-23 (v1.36.6 not served by the proxy here)"),
    (1, 37): ("1.37.2", "go list -m -json k8s.io/kubernetes@latest: v1.37.2, 2026-10-27 (config/compat.py KUBERNETES_NEWEST)"),
}

DRIVER_BRANCHES: dict[int, Support] = {
    # NVIDIA lists only the long-term support and production branches with an end of life; new feature branches
    # are "short-lived and do not have an end-of-life date" (the 620 page). Month-only ends are taken as the month's
    # first day: support may stop any day in that month.
    535: Support("R535", "long-term support", date(2026, 6, 1), "June 2026", NV_615),
    580: Support("R580", "long-term support", date(2028, 6, 1), "June 2028", NV_620),
    595: Support("R595", "production", date(2027, 3, 1), "March 2027", NV_620),
    610: Support("R610", "new feature", date(2026, 8, 1), "August 2026", NV_615),
    620: Support("R620", "long-term support", date(2029, 9, 1), "September 2029", NV_620),
}
NEWEST_LISTED_PAGE = NV_620
"""A branch below 620 that this page no longer lists is no longer supported (the page lists every supported LTS and production branch)."""

LAST_DRIVER_BRANCH: dict[str, tuple[int, str]] = {
    # architecture (config/catalog.py ARCHITECTURES) -> (last branch that supports it, source). Turing and newer:
    # "Ongoing". (Maxwell ends at R580 and Kepler at R470 too; the catalog has no such GPUs.)
    "pascal": (580, NV_ARCH + " (Pascal 6.0/6.1: last driver support R580, last CUDA 12.x)"),
    "volta": (580, NV_ARCH + " (Volta 7.0: last driver support R580, last CUDA 12.x)"),
}


@dataclass(frozen=True)
class Status:
    state: str            # "supported", "ending" (within WARN_DAYS), "ended", "unknown"
    ends: date | None
    text: str             # the end as the source gives it, or why it is unknown


def _status(row: Support | None, today: date, unknown: str) -> Status:
    if row is None:
        return Status("unknown", None, unknown)
    if row.ends is None:
        return Status("supported", None, "no end announced")
    days = (row.ends - today).days
    state = "ended" if days < 0 else "ending" if days <= WARN_DAYS else "supported"
    return Status(state, row.ends, row.ends_text)


def kubernetes_row(version: str) -> Support | None:
    return KUBERNETES_MINORS.get(version_tuple(version)[:2])  # type: ignore[arg-type]


def kubernetes_status(version: str, today: date) -> Status:
    return _status(kubernetes_row(version), today, "minor not in the support catalog")


def driver_branch(version: str) -> int:
    return int(version.split(".")[0])


def driver_row(version: str) -> Support | None:
    return DRIVER_BRANCHES.get(driver_branch(version))


def driver_status(version: str, today: date) -> Status:
    branch = driver_branch(version)
    row = driver_row(version)
    if row is None and branch < max(DRIVER_BRANCHES):
        # an older branch NVIDIA's current page no longer lists has ended; when is not in the catalog
        return Status("ended", None, f"not listed as supported on {NEWEST_LISTED_PAGE}")
    return _status(row, today, "branch not in the support catalog")


def status_sentence(what: str, status: Status, today: date) -> str | None:
    """One warning for `what` ("Kubernetes 1.35.9") past or near its end of support; None when fine."""
    if status.state == "ended":
        if status.ends is None:
            return f"{what} is past its end of support ({status.text}, read {CATALOG_READ.isoformat()}, config/support.py)"
        return f"{what} is past its end of support: it ended {status.text} (config/support.py, read {CATALOG_READ.isoformat()})"
    if status.state == "ending":
        days = (status.ends - today).days  # type: ignore[operator]
        return (f"{what} reaches its end of support {status.text}, in {days} days "
                f"(warned from {WARN_DAYS} days before; config/support.py, read {CATALOG_READ.isoformat()})")
    return None


def last_branch_problem(driver_version: str, architecture: str) -> tuple[int, str] | None:
    """(last branch, source) when this driver's branch is newer than the last one supporting `architecture`."""
    last = LAST_DRIVER_BRANCH.get(architecture)
    if last is None or driver_branch(driver_version) <= last[0]:
        return None
    return last


@dataclass(frozen=True)
class Newest:
    version: str
    source: str
    note: str = ""        # why the pin does not follow it yet ("not yet verified: ...")


NEWEST: dict[str, Newest] = {
    # the newest release seen of each pinned component (docs/FIELD-FACTS.md, "Current releases", read 2026-12-06)
    "kubernetes": Newest("1.37.2", "go list -m -json k8s.io/kubernetes@latest (2026-10-27)",
                         "not yet verified: GPU Operator v26.7.0 is validated with Kubernetes up to 1.36 (platform-support.rst)"),
    "nvidia-driver": Newest("620 (R620 long-term support)", NV_620,
                            "not yet verified: no R620 version number found; 595.91.07 (R595) ends March 2027 and its Ubuntu package was not seen"),
    "nvidia-container-toolkit": Newest("1.20.0", "NVIDIA/nvidia-container-toolkit tag v1.20.0 (2026-08-12)"),
    "kubevirt": Newest("v1.9.0", "kubevirt/kubevirt tag v1.9.0 (2026-07-27)"),
    "gpu-operator": Newest("v26.7.1", "NVIDIA/gpu-operator releases",
                           "not yet verified: only v26.7.0's values.yaml is at hand (tests/reference)"),
    "device-plugin": Newest("0.20.1", "NVIDIA/k8s-device-plugin releases (2026-09)",
                            "not yet verified: only v0.20.0's values.yaml is at hand (tests/reference)"),
    "dcgm-exporter": Newest("4.6.0-4.8.3", "GPU Operator v26.7.0 values.yaml dcgmExporter.version",
                            f"not yet verified: its default-counters.csv is not at hand; the alerts read {CHECKED_DCGM_EXPORTER}'s"),
    "kube-prometheus-stack": Newest("88.5.3", "prometheus-community/helm-charts kube-prometheus-stack-88.5.3 (2026-08-21)"),
    "calico": Newest("v3.32.2", "projectcalico/calico v3.32.2 manifests in a public code index",
                     "not yet verified: the newest tag read with its data is v3.32.1 (tests/reference)"),
}


def _row(component: str, version: str, status: Status | None = None, **extra) -> dict:
    newest = NEWEST.get(component)
    row = {"component": component, "version": version, **extra}
    if status is not None:
        row["support"] = status.state
        row["ends"] = status.ends.isoformat() if status.ends else None
        row["endsAsPublished"] = status.text
    else:
        row["support"] = "no end-of-support data"
    if newest is not None:
        current = version.lstrip("v") == newest.version.lstrip("v") or (
            component == "nvidia-driver" and newest.version.startswith(str(driver_branch(version))))
        row["newest"] = {"version": newest.version, "source": newest.source,
                         "state": "pinned" if current else (newest.note or "newer release available")}
    return row


def pinned_versions(cfg, backend_pins: tuple[tuple[str, str], ...] = ()) -> dict:
    """versions.json: every pinned component, its version, support status and end, relative to CATALOG_READ (so the file
    is the same whichever day the plan runs); the warnings of the day are on the terminal (config_warnings).
    backend_pins: (component, version) that the stack's hypervisor backends pin themselves (hypervisors/base.py
    Hypervisor.pins, for the kinds of cfg.hosts: tools/plan.py backend_pins)."""
    rows = []
    if cfg.kubernetes is not None:
        k = cfg.kubernetes
        extra = {"pastEndOfSupport": k.past_end_of_support} if k.past_end_of_support else {}
        row = kubernetes_row(k.version)
        rows.append(_row("kubernetes", k.version, kubernetes_status(k.version, CATALOG_READ),
                         source=row.source if row else None, **extra))
    if cfg.guest is not None:
        nv = cfg.guest.nvidia
        row = driver_row(nv.driver_version)
        rows.append(_row("nvidia-driver", nv.driver_version, driver_status(nv.driver_version, CATALOG_READ),
                         branch=driver_branch(nv.driver_version), designation=row.designation if row else None,
                         source=row.source if row else NEWEST_LISTED_PAGE))
        if nv.cuda is not None:
            rows.append(_row("cuda-toolkit", nv.cuda.version))
        rows.append(_row("nvidia-container-toolkit", cfg.guest.container_runtime.nvidia_toolkit_version))
    rows += [_row(component, version) for component, version in backend_pins]
    a = cfg.addons
    if cfg.kubernetes is not None:
        if a.pod_network.enabled and cfg.kubernetes.mode == "init":
            rows.append(_row("calico", a.pod_network.version))
        if a.device_plugin.enabled:
            rows.append(_row("device-plugin", a.device_plugin.version))
        if a.gpu_operator.enabled:
            rows.append(_row("gpu-operator", a.gpu_operator.version))
            rows.append(_row("dcgm-exporter", a.gpu_operator.dcgm_exporter_version))
        if a.monitoring.enabled:
            rows.append(_row("kube-prometheus-stack", a.monitoring.chart_version))
            if not a.gpu_operator.enabled:
                rows.append(_row("dcgm-exporter", a.monitoring.dcgm_exporter_image_tag))
    return {"catalogRead": CATALOG_READ.isoformat(), "warnDays": WARN_DAYS,
            "note": "support is relative to catalogRead; `make plan` warns relative to the day it runs",
            "components": rows}
