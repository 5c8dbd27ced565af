"""Parsers of nvidia-smi output that only the tests use: they read the real captures in tests/fixtures/nvidia-smi/,
against which the doctor's own parsers (doctor/nvidia_smi.py) and the verify phase's (render/verify_output.py) are checked."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from doctor.nvidia_smi import QueriedGpu, na, parse_query

_ROW = re.compile(r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s+\|\s+(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d)\s")


def parse_table_gpus(text: str) -> list[tuple[int, str, str]]:
    """(index, name, bus id) per GPU row of the `nvidia-smi` table."""
    return [(int(m.group("index")), m.group("name").strip(), m.group("bus")) for m in map(_ROW.match, text.splitlines()) if m]


def parse_query_gpu_csv(text: str) -> list[dict[str, str | None]]:
    """`--query-gpu=... --format=csv` (with its header) -> one dict per GPU, keyed by field name without the unit.

    `[N/A]` and `N/A` become None; values keep their units (`81559 MiB`) unless `nounits` was given.
    One unknown field makes nvidia-smi print only `Field "x" is not a valid field to query.`: a ValueError here.
    """
    if m := re.search(r'Field "([^"]+)" is not a valid field to query', text):
        raise ValueError(f"nvidia-smi refused the query: field {m.group(1)!r} is not valid for this driver")
    rows = [r for r in csv.reader(io.StringIO(text.strip()), skipinitialspace=True) if r]
    if not rows:
        return []
    header = [re.sub(r"\s*\[[^\]]*\]$", "", h.strip()) for h in rows[0]]
    out = []
    for row in rows[1:]:
        if len(row) != len(header):
            raise ValueError(f"expected {len(header)} fields, got {len(row)}")
        out.append({k: na(v) for k, v in zip(header, row)})
    return out


@dataclass(frozen=True)
class GpuFabric:
    """The `Fabric` block of `nvidia-smi -q` (NVSwitch systems: State Completed / Status Success when trained)."""
    bus_id: str
    uuid: str | None
    state: str | None   # Completed / In Progress / Not Started / None (N/A: no fabric on this GPU)
    status: str | None  # Success / an error / None

    @property
    def ok(self) -> bool:
        return self.state == "Completed" and self.status == "Success"


def parse_query_fabric(text: str) -> list[GpuFabric]:
    out = []
    for gpu in parse_query(text)["gpus"]:
        fabric = gpu.get("Fabric") if isinstance(gpu.get("Fabric"), dict) else {}
        out.append(GpuFabric(gpu["bus_id"], na(gpu.get("GPU UUID")), na(fabric.get("State")), na(fabric.get("Status"))))
    return out


def query_gpus_xml(text: str) -> tuple[dict[str, str | None], list[QueriedGpu]]:
    """The same facts from `nvidia-smi -q -x` (DTD nvsmi_device_v10..v12)."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", text))

    def t(node, path: str) -> str | None:
        el = node.find(path)
        return na(el.text) if el is not None and el.text is not None else None

    gpus = [QueriedGpu(
        bus_id=g.get("id", ""), uuid=t(g, "uuid"), name=t(g, "product_name"),
        persistence_mode=t(g, "persistence_mode"),
        virtualization_mode=t(g, "gpu_virtualization_mode/virtualization_mode"),
        mig_mode=t(g, "mig_mode/current_mig"),
        fabric_state=t(g, "fabric/state"), fabric_status=t(g, "fabric/status"),
        remapping_failure=t(g, "remapped_rows/remapping_failure_occurred"),
        dram_uncorrectable_volatile=t(g, "ecc_errors/volatile/dram_uncorrectable"),
    ) for g in root.findall("gpu")]
    head = {"driver_version": t(root, "driver_version"), "cuda_version": t(root, "cuda_version"),
            "attached_gpus": t(root, "attached_gpus")}
    return head, gpus
