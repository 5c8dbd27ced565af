"""Parsers for what `nvidia-smi` and the kernel print on a guest, for the doctor (`gpu-stack doctor`).

The verify phase's own output (the inventory that becomes a stack output) is parsed by render/verify_output.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


# ---------------------------------------------------------------------------
# Guest diagnosis (`gpu-stack doctor`) and the guest verify phase: `-L`, `-q`,
# `-q -x`, `topo -m`, `nvlink -s` and the Xid lines of dmesg. Every parser is
# tested on real captures (tests/fixtures/nvidia-smi/, PROVENANCE.md there).
# ---------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NA = frozenset({"N/A", "[N/A]", ""})


def strip_ansi(text: str) -> str:
    """nvidia-smi underlines the `topo -m` header even when stdout is not a terminal."""
    return _ANSI.sub("", text)


def na(value: str | None) -> str | None:
    """None for `N/A`, `[N/A]` (query CSV) and empty values; the value otherwise."""
    if value is None:
        return None
    v = value.strip()
    return None if v in _NA else v


def normalize_pci(address: str) -> str:
    """`00000000:1B:00.0` (nvidia-smi, 8-digit domain), `0000:1b:00.0` (lspci -D) or `1b:00.0` -> `0000:1b:00.0`."""
    m = re.fullmatch(r"(?:(?P<dom>[0-9A-Fa-f]{1,8}):)?(?P<bus>[0-9A-Fa-f]{2}):(?P<slot>[0-9A-Fa-f]{2})\.(?P<fn>[0-7])", address.strip())
    if not m:
        raise ValueError(f"{address!r} is not a PCI address")
    return f"{int(m.group('dom') or '0', 16):04x}:{m.group('bus').lower()}:{m.group('slot').lower()}.{m.group('fn')}"


@dataclass(frozen=True)
class MigDevice:
    profile: str
    device: int
    uuid: str


@dataclass(frozen=True)
class ListedGpu:
    """One `GPU N: <name> (UUID: GPU-...)` line of `nvidia-smi -L`, with its MIG devices."""
    index: int
    name: str
    uuid: str
    mig: tuple[MigDevice, ...] = ()


_LIST_GPU = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>GPU-[0-9A-Fa-f-]+)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG (?P<profile>\S+)\s+Device\s+(?P<device>\d+): \(UUID: (?P<uuid>MIG-[0-9A-Fa-f-]+)\)\s*$")
LIST_LINE = re.compile(re.sub(r"\?P<\w+>", "", f"{_LIST_GPU.pattern}|{_LIST_MIG.pattern}"))  # a line parse_list() accepts


def parse_list(text: str) -> list[ListedGpu]:
    """`nvidia-smi -L`. MIG lines are indented under their GPU; any other line is an error (nvidia-smi failed)."""
    gpus: list[ListedGpu] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if m := _LIST_GPU.match(line):
            gpus.append(ListedGpu(int(m.group("index")), m.group("name"), m.group("uuid")))
        elif (m := _LIST_MIG.match(line)) and gpus:
            last = gpus[-1]
            mig = MigDevice(m.group("profile"), int(m.group("device")), m.group("uuid"))
            gpus[-1] = ListedGpu(last.index, last.name, last.uuid, last.mig + (mig,))
        else:
            raise ValueError(f"not an `nvidia-smi -L` line: {line.strip()!r}")
    return gpus


@dataclass(frozen=True)
class TopoMatrix:
    """`nvidia-smi topo -m`: the link between every pair of devices, and each GPU's affinities."""
    devices: tuple[str, ...]                    # GPU0.., NIC0.. in header order
    links: dict[tuple[str, str], str]           # (GPU0, GPU1) -> NV18 / SYS / NODE / PHB / PXB / PIX; both orders
    cpu_affinity: dict[str, str | None]         # GPU0 -> "0-55,112-167"
    numa_affinity: dict[str, str | None]
    gpu_numa_id: dict[str, str | None]
    nic_legend: dict[str, str]                  # NIC9 -> mlx5_10

    def gpus(self) -> tuple[str, ...]:
        return tuple(d for d in self.devices if d.startswith("GPU"))

    def gpu_links(self) -> dict[tuple[str, str], str]:
        """GPU-to-GPU links only, each unordered pair once (lower index first)."""
        g = self.gpus()
        return {(a, b): self.links[(a, b)] for i, a in enumerate(g) for b in g[i + 1:] if (a, b) in self.links}


_AFFINITY_COLUMNS = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")


def _topo_cells(line: str) -> list[str]:
    """One `topo -m` line as cells: TAB-separated as nvidia-smi prints it, else space-aligned (a terminal
    copy/paste expands the TABs), where cells are split on white space and the multi-word header names
    (CPU Affinity, NUMA Affinity, GPU NUMA ID) are joined again. Empty cells vanish in the space form."""
    if "\t" in line:
        return line.split("\t")
    words = line.split()
    cells: list[str] = []
    i = 0
    while i < len(words):
        for name in _AFFINITY_COLUMNS:
            parts = name.split()
            if words[i:i + len(parts)] == parts:
                cells.append(name)
                i += len(parts)
                break
        else:
            cells.append(words[i])
            i += 1
    return cells


def parse_topo_matrix(text: str) -> TopoMatrix:
    """TAB-separated or space-aligned matrix; ANSI escapes stripped, the self cell ` X ` skipped, NIC rows' empty tail ignored."""
    lines = strip_ansi(text).splitlines()
    header_at = next((i for i, line in enumerate(lines) if "GPU0" in [c.strip() for c in _topo_cells(line)[:2]]), None)
    if header_at is None:
        raise ValueError("no `topo -m` header (a line naming GPU0 in its first column)")
    header = [c.strip() for c in _topo_cells(lines[header_at])]
    if header and header[0] == "":
        header = header[1:]  # the leading TAB above the row labels (absent when the capture was strip()ped)
    devices = tuple(c for c in header if c and c not in _AFFINITY_COLUMNS)
    links: dict[tuple[str, str], str] = {}
    cpu: dict[str, str | None] = {}
    numa: dict[str, str | None] = {}
    gpu_numa: dict[str, str | None] = {}
    legend: dict[str, str] = {}
    for line in lines[header_at + 1:]:
        if m := re.match(r"^\s*(NIC\d+):\s*(\S+)\s*$", line):
            legend[m.group(1)] = m.group(2)
            continue
        cells = _topo_cells(line)
        if not cells:
            continue
        row = cells[0].strip()
        if row not in devices:
            continue
        values = [c.strip() for c in cells[1:]]
        for col, value in zip(devices, values):
            if value and value != "X":
                links[(row, col)] = value
        rest = values[len(devices):]
        # Recent drivers put an empty field before GPU NUMA ID: `0-63\t0\t\tN/A`.
        rest = [r for r in rest if r != ""] if row.startswith("GPU") else []
        if row.startswith("GPU"):
            named = dict(zip([c for c in header[len(devices):] if c], rest))
            cpu[row] = na(named.get("CPU Affinity"))
            numa[row] = na(named.get("NUMA Affinity"))
            gpu_numa[row] = na(named.get("GPU NUMA ID"))
    return TopoMatrix(devices, links, cpu, numa, gpu_numa, legend)


@dataclass(frozen=True)
class NvlinkGpu:
    """`nvidia-smi nvlink -s` for one GPU: (link, GB/s) per link, None for an inactive link."""
    index: int
    name: str
    uuid: str
    supported: bool
    links: tuple[tuple[int, float | None], ...]
    snipped: bool = False  # a pasted capture with `...<snip>...` in place of some links

    def inactive(self) -> list[int]:
        return [link for link, speed in self.links if speed is None]


_NVLINK = re.compile(r"^\s+Link (?P<link>\d+): (?P<rest>.+?)\s*$")


def parse_nvlink_status(text: str) -> list[NvlinkGpu]:
    gpus: list[NvlinkGpu] = []

    def replace_last(**changes) -> None:
        last = gpus[-1]
        gpus[-1] = NvlinkGpu(**{**last.__dict__, **changes})

    for line in text.splitlines():
        if m := _LIST_GPU.match(line):
            gpus.append(NvlinkGpu(int(m.group("index")), m.group("name"), m.group("uuid"), True, ()))
        elif not gpus or not line.strip():
            continue
        elif "does not have or support Nvlink" in line or "NVLink is not supported" in line:
            replace_last(supported=False)
        elif m := _NVLINK.match(line):
            rest = m.group("rest")
            speed = re.match(r"([\d.]+) GB/s", rest)
            replace_last(links=gpus[-1].links + ((int(m.group("link")), float(speed.group(1)) if speed else None),))
        elif "<snip>" in line:
            replace_last(snipped=True)
    return gpus


def parse_query(text: str) -> dict:
    """`nvidia-smi -q` (text) -> {driver_version, cuda_version, attached_gpus, gpus: [{"bus_id", ...nested sections}]}.

    Sections nest by four-space indentation; values stay strings as printed (use `na()` for N/A).
    """
    out: dict = {"driver_version": None, "cuda_version": None, "attached_gpus": None, "gpus": []}
    stack: list[tuple[int, dict]] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.startswith("=") or raw.strip().startswith("==="):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        key, sep, value = line.partition(" : ") if " : " in line else (line.rstrip(":").rstrip(), "", "")
        if sep == "" and line.endswith(":"):
            key, value = line[:-1].rstrip(), ""
        key = key.strip()
        if indent == 0:
            if m := re.match(r"^GPU ([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d)$", line):
                gpu: dict = {"bus_id": m.group(1)}
                out["gpus"].append(gpu)
                stack = [(0, gpu)]
            elif sep:
                top = {"Driver Version": "driver_version", "CUDA Version": "cuda_version", "Attached GPUs": "attached_gpus"}
                if key in top:
                    out[top[key]] = value.strip()
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack:
            continue
        parent = stack[-1][1]
        if sep:
            parent[key] = value.strip()
        else:
            section: dict = {}
            parent[key] = section
            stack.append((indent, section))
    return out


@dataclass(frozen=True)
class QueriedGpu:
    """What the doctor reads per GPU from `-q` (text) or `-q -x`."""
    bus_id: str
    uuid: str | None
    name: str | None
    persistence_mode: str | None   # Enabled / Disabled
    virtualization_mode: str | None
    mig_mode: str | None
    fabric_state: str | None
    fabric_status: str | None
    remapping_failure: str | None  # Yes / No
    dram_uncorrectable_volatile: str | None


def query_gpus(text: str) -> tuple[dict[str, str | None], list[QueriedGpu]]:
    """`-q` text -> ({driver_version, cuda_version, attached_gpus}, per-GPU facts)."""
    q = parse_query(text)

    def sub(gpu: dict, *path: str) -> str | None:
        node: object = gpu
        for p in path:
            if not isinstance(node, dict):
                return None
            node = node.get(p)
        return na(node) if isinstance(node, str) else None

    gpus = [QueriedGpu(
        bus_id=g["bus_id"], uuid=sub(g, "GPU UUID"), name=sub(g, "Product Name"),
        persistence_mode=sub(g, "Persistence Mode"),
        virtualization_mode=sub(g, "GPU Virtualization Mode", "Virtualization Mode"),
        mig_mode=sub(g, "MIG Mode", "Current"),
        fabric_state=sub(g, "Fabric", "State"), fabric_status=sub(g, "Fabric", "Status"),
        remapping_failure=sub(g, "Remapped Rows", "Remapping Failure Occurred"),
        dram_uncorrectable_volatile=sub(g, "ECC Errors", "Volatile", "DRAM Uncorrectable"),
    ) for g in q["gpus"]]
    head = {k: q[k] for k in ("driver_version", "cuda_version", "attached_gpus")}
    return head, gpus


# Xid codes the doctor explains (NVIDIA's "XID Errors" catalogue). Anything else is listed with its number.
XID_MEANINGS: dict[int, tuple[str, str]] = {
    13: ("application", "Graphics engine exception: usually an application fault (out-of-bounds access); check the workload first"),
    31: ("application", "GPU memory page fault: usually an application fault (illegal address); check the workload first"),
    43: ("application", "GPU stopped processing: the application hit a software fault; the GPU stays usable"),
    48: ("memory", "Double-bit ECC error: drain the node and reset the GPU; replace it if it repeats"),
    63: ("memory", "ECC page retirement or row remapping recorded: reset the GPU (reboot the VM) to apply the remap"),
    64: ("memory", "ECC page retirement or row remapping failed: the GPU needs service (RMA)"),
    74: ("interconnect", "NVLink error: check Fabric Manager and `nvidia-smi nvlink -s`; reset the GPU"),
    79: ("bus", "GPU has fallen off the bus: the PCIe link is gone; drain, reboot the VM (and the host if it stays), check power/seating"),
    92: ("memory", "High single-bit ECC error rate: watch the GPU; plan a replacement if it keeps rising"),
    94: ("memory", "Contained ECC error: the affected application was stopped; reset the GPU when convenient"),
    95: ("memory", "Uncontained ECC error: every application on the GPU was affected; drain the node and reset the GPU"),
    # NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, Ampere and newer): 119
    # GSP_RPC_TIMEOUT "GSP RPC Timeout" and 120 GSP_ERROR "GSP Error", both with Resolution Bucket RESET_GPU
    # (immediate) and INVESTIGATE_SW (investigatory), on A100, H100, B100 and GB200. The numbers are the driver's
    # own (NVIDIA/open-gpu-kernel-modules src/common/sdk/nvidia/inc/nverror.h: GSP_RPC_TIMEOUT (119), GSP_ERROR (120)).
    119: ("firmware", "GSP RPC timeout: the GPU System Processor firmware did not answer the driver. NVIDIA: reset the GPU "
                      "(drain, reboot the VM), then investigate the software (driver version and its known issues)"),
    120: ("firmware", "GSP error: the GPU System Processor firmware reported an error. NVIDIA: reset the GPU "
                      "(drain, reboot the VM), then investigate the software (driver version and its known issues)"),
}

_XID = re.compile(r"NVRM: Xid \((?P<pci>PCI:[0-9A-Fa-f:.]+)\): (?P<code>\d+), (?P<rest>.*)$")


@dataclass(frozen=True)
class XidEvent:
    pci: str      # as the kernel prints it: PCI:0000:0d:00
    code: int
    message: str
    line: str

    @property
    def meaning(self) -> str:
        return XID_MEANINGS.get(self.code, ("other", "see NVIDIA's XID catalogue"))[1]

    @property
    def category(self) -> str:
        return XID_MEANINGS.get(self.code, ("other", ""))[0]


def parse_xid_lines(dmesg: str) -> list[XidEvent]:
    """`NVRM: Xid (PCI:0000:0d:00): 79, pid=..., GPU has fallen off the bus.` lines of dmesg / the journal."""
    out = []
    for line in dmesg.splitlines():
        if m := _XID.search(line):
            out.append(XidEvent(m.group("pci"), int(m.group("code")), m.group("rest").strip(), line.strip()))
    return out
