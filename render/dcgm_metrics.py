"""The DCGM metric names the alerts, recording rules and dashboard use: read from the counters file gpu-stack ships.

dcgm-exporter names each Prometheus metric after the first column of its counters file: ExtractCounters keeps
`FieldName: record[0]` for every line (internal/pkg/counters/counter_config.go at tag 4.5.3-4.8.2) and the text
renderer writes `{{ $counter.FieldName }}{gpu=...}` (internal/pkg/rendermetrics/render_metrics.go, same tag). So
the metric names our rules can see are exactly the enabled lines of render/dcgm-counters.csv, the file the exporter
is started with (the counters ConfigMap). A line whose name the exporter does not know stops it at start ("could
not find DCGM field", counter_config.go): loud (DcgmExporterDown/Absent fire), never silent.

`USED` is the one table of the fields the renderers use; `Metrics` checks each against the counters file when it is
built, and renders every selector. `RENAMES` lists the field renames known between dcgm-exporter releases; for each
used field with a rename, the selector becomes `(NEW{sel} or OLD{sel})` (a range function is applied to each name,
an `absent()` needs both absent), so a rule keeps working while a rolling upgrade runs both releases. It is empty:
no field gpu-stack uses was renamed in default-counters.csv from tag 2.4.6-2.6.8 to 4.5.3-4.8.2 or on the main
branch after it (read 2026-12-06; docs/SOURCES.md lists what did change), and the counters file of 4.6.0-4.8.3
(GPU Operator v26.7.0's default) was not at hand (config/support.py NEWEST).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from config.support import CHECKED_DCGM_EXPORTER

COUNTERS_FILE = Path(__file__).with_name("dcgm-counters.csv")
COUNTERS_PATH = "render/dcgm-counters.csv"
CHECKED_EXPORTER = CHECKED_DCGM_EXPORTER
"""The dcgm-exporter release whose etc/default-counters.csv our counters file keeps whole (config/support.py, the
ground floor, holds it: the config defaults and the support catalog read it there too)."""


@dataclass(frozen=True)
class Rename:
    old: str
    new: str
    release: str
    """The first dcgm-exporter release that exports `new`."""
    source: str
    """Tag and path (or commit) where the rename is read."""


RENAMES: tuple[Rename, ...] = ()


USED: dict[str, str] = {
    # what the alerts and the dashboard read -> the counters-file field (render/gpu_alerts.py)
    "fb_used": "DCGM_FI_DEV_FB_USED",
    "gpu_temp": "DCGM_FI_DEV_GPU_TEMP",
    "gpu_util": "DCGM_FI_DEV_GPU_UTIL",
    "power_usage": "DCGM_FI_DEV_POWER_USAGE",
    "power_limit": "DCGM_FI_DEV_POWER_MGMT_LIMIT",
    "xid_last": "DCGM_FI_DEV_XID_ERRORS",
    "xid_count": "DCGM_EXP_XID_ERRORS_COUNT",
    "ecc_dbe_volatile": "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "row_remap_failure": "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "nvlink_crc_flit_errors": "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "nvlink_crc_data_errors": "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
    "nvlink_replay_errors": "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "nvlink_recovery_errors": "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
    "fabric_status": "DCGM_FI_DEV_FABRIC_MANAGER_STATUS",
    "fabric_error": "DCGM_FI_DEV_FABRIC_MANAGER_ERROR_CODE",
    "tensor_active": "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
}


class UnknownMetric(ValueError):
    pass


def enabled_fields(text: str) -> dict[str, str]:
    """The enabled lines of a counters file: field -> Prometheus type (the exporter's csv reader: `#` lines are
    comments, cells are trimmed)."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        out[cells[0]] = cells[1] if len(cells) > 1 else ""
    return out


def _sel(selector: str) -> str:
    return f"{{{selector}}}" if selector else ""


@dataclass(frozen=True)
class Metrics:
    fields: Mapping[str, str]
    """Enabled counters-file fields -> Prometheus type."""
    renames: tuple[Rename, ...] = RENAMES
    used: Mapping[str, str] = field(default_factory=lambda: dict(USED))
    source: str = COUNTERS_PATH

    def __post_init__(self) -> None:
        missing = sorted(f for f in self.used.values() if f not in self.fields)
        if missing:
            raise UnknownMetric(f"{self.source} does not enable {', '.join(missing)}, which the alerts or dashboard use")

    @classmethod
    def from_file(cls, path: Path = COUNTERS_FILE, renames: tuple[Rename, ...] = RENAMES) -> "Metrics":
        return cls(enabled_fields(path.read_text()), renames)

    def field(self, key: str) -> str:
        """The counters-file field a rule means by `key` (a USED key)."""
        try:
            return self.used[key]
        except KeyError:
            raise UnknownMetric(f"{key!r} is not in render/dcgm_metrics.py USED") from None

    def names(self, key: str) -> tuple[str, ...]:
        """The names `key` is exported under across the known renames: the newest first, the counters file's among them."""
        names = [self.field(key)]
        changed = True
        while changed:
            changed = False
            for r in self.renames:
                for a, b in ((r.old, r.new), (r.new, r.old)):
                    if a in names and b not in names:
                        names.append(b)
                        changed = True
        order = {r.old: i for i, r in enumerate(self.renames)}
        newer = {r.old: r.new for r in self.renames}

        def age(n: str) -> int:  # steps from n to the newest name
            steps = 0
            while n in newer and steps <= len(self.renames):
                n, steps = newer[n], steps + 1
            return steps
        return tuple(sorted(names, key=lambda n: (age(n), order.get(n, -1))))

    def v(self, key: str, selector: str = "") -> str:
        """Instant vector of `key` with `selector` (label matchers without braces)."""
        parts = [n + _sel(selector) for n in self.names(key)]
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def over(self, function: str, key: str, window: str, selector: str = "") -> str:
        """`function(key{selector}[window])`, once per name, joined by `or`."""
        parts = [f"{function}({n}{_sel(selector)}[{window}])" for n in self.names(key)]
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def absent(self, key: str, selector: str = "") -> str:
        """True when no name of `key` has a series: absent() of each, joined by `and` (labels from the matchers)."""
        parts = [f"absent({n}{_sel(selector)})" for n in self.names(key)]
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"


METRICS = Metrics.from_file()
