"""Parsers for what `nvidia-smi` prints in the verify phase.

The verify phase prints `--query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total
--format=csv,noheader` under a `--- gpu-inventory ---` marker, then the plain
`nvidia-smi` table under `--- nvidia-smi ---`, whose banner carries the CUDA
version the driver supports. The inventory becomes a stack output.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

_BANNER = re.compile(r"NVIDIA-SMI\s+(?P<smi>\S+)\s+Driver Version:\s+(?P<driver>\S+)\s+CUDA Version:\s+(?P<cuda>[\d.]+)")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    bus_id: str
    driver_version: str
    memory_mib: int


def parse_banner(text: str) -> dict[str, str]:
    """Driver and CUDA version from the `nvidia-smi` table banner."""
    m = _BANNER.search(text)
    if not m:
        raise ValueError("no 'NVIDIA-SMI ... Driver Version ... CUDA Version' banner in the output")
    return {"driver_version": m.group("driver"), "cuda_version": m.group("cuda")}


def parse_query_csv(text: str) -> list[GpuInfo]:
    """Rows of --query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total --format=csv,noheader."""
    out = []
    for row in csv.reader(io.StringIO(text.strip()), skipinitialspace=True):
        if not row:
            continue
        if len(row) != 6:
            raise ValueError(f"expected 6 fields, got {len(row)}: {row}")
        index, name, uuid, bus, driver, memory = (f.strip() for f in row)
        out.append(GpuInfo(int(index), name, uuid, bus, driver, int(memory.split()[0])))
    return out


def _section(text: str, marker: str) -> str:
    parts = text.split(f"--- {marker} ---\n", 1)
    if len(parts) != 2:
        return ""
    return parts[1].split("\n--- ", 1)[0]


def parse_verify_output(text: str) -> dict:
    """The verify phase's stdout -> {gpus: [...], driverVersion, cudaVersion}."""
    gpus = parse_query_csv(_section(text, "gpu-inventory"))
    if not gpus and "--- nvidia-smi ---" not in text:
        # a VM without GPUs (scripts/guest/verify-cpu.sh, upgrade-verify.sh with GS_GPU_COUNT=0): no driver to ask
        return {"gpus": [], "driverVersion": None, "cudaVersion": None}
    banner = parse_banner(_section(text, "nvidia-smi"))
    return {
        "gpus": [{"index": g.index, "name": g.name, "uuid": g.uuid, "busId": g.bus_id, "memoryMib": g.memory_mib} for g in gpus],
        "driverVersion": banner["driver_version"],
        "cudaVersion": banner["cuda_version"],
    }
