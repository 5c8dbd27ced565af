"""The burn-in gate (issue 27): parsers for what its Jobs print, the node's expected bandwidth, the verdict.

Pure functions. The burn-in Jobs (render/k8s_manifests.burnin_jobs) run three tools on a node whose GPUs are
all requested by one Pod, and print their output between `--- <name> ---` markers:
- `dcgmi diag -r <level>`: DCGM diagnostics on every GPU (`parse_dcgmi_diag`);
- nccl-tests `all_reduce_perf -b 8 -e 1G -f 2 -g <n>` with `NCCL_DEBUG=INFO` (`parse_all_reduce_perf`,
  `parse_nccl_transports`);
- `nvidia-smi topo -p2p r` (`parse_topo_p2p`).
`evaluate` turns them into a verdict whose failures name the node, the GPU (index, UUID, PCI address) or link,
the failing test and the doctor check or seed 003 step that diagnoses it.

Every parser is tested on real output (tests/fixtures/burn-in/, PROVENANCE.md there). What the set of
captures does NOT have, and what the parsers assume about it:
- **No run inside a VM.** A passthrough guest prints the same tools' output (the tools do not know they are
  in a VM); what differs is the numbers (busbw) and the P2P status. The parsers read no hypervisor-specific
  line, so they are assumed to hold in a guest; the P2P verdict is where the VM shows (CNS/TNS, SHM).
- **No PCIe-only run.** The all-reduce table layout does not depend on the transport, so the same parser
  reads a PCIe node; the gate there compares against the config's figure (there is no sourced one).
- **No `NCCL_DEBUG=INFO` transport lines and no `topo -p2p r`.** Their formats are read from the sources:
  NCCL v2.30.7-1 src/transport/p2p.cc (`Channel %02d/%01d : %d[%d] -> %d[%d] via P2P/...`), shm.cc
  (`Channel %02d : %d[%d] -> %d[%d] via SHM/...`), net.cc (`... [send] via NET/...`) and src/debug.cc (the
  `host:pid:tid [dev] NCCL INFO ` prefix); the `-p2p r` matrix is assumed to have the layout and legend of the
  captured `-p2p n`/`-p2p p` matrices (same nvidia-smi subcommand, another capability).
- **No `dcgmi diag -j`.** The text table is parsed; its layout differs between DCGM 3.x and 4.x (both are in
  the set) and long messages are hard-wrapped, or cut, by DCGM itself.
nccl-tests' own format is read from NVIDIA/nccl-tests v2.19.6 src/util.cu (writeResultHeader,
writeBenchmarkLine*, writeResultFooter) and src/common.h (the `Test CUDA failure` / `Test NCCL failure` lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from config.catalog import INTERCONNECT, NVSWITCH_BOARD

# ---------------------------------------------------------------------------------------------------------
# nccl-tests all_reduce_perf

_RANK = re.compile(r"^#\s+Rank\s+(?P<rank>\d+)\s+(?:Group\s+\d+\s+)?Pid\s+\d+\s+on\s+(?P<host>\S+)\s+device\s+(?P<device>\d+)"
                   r"\s+\[(?P<bus>[^\]]+)\]\s+(?P<name>.+?)\s*$")
_FAILURE = re.compile(r"Test (?:CUDA |NCCL )?failure|NCCL WARN|Segmentation fault|Aborted|\bCUDA error\b")


@dataclass(frozen=True)
class NcclDevice:
    rank: int
    host: str
    device: int
    bus: str
    """As nccl-tests prints it: `0x1b` (older builds) or `0000:04:00` (newer)."""
    name: str


@dataclass(frozen=True)
class NcclRow:
    size_bytes: int
    busbw_out: float | None
    busbw_in: float | None
    wrong_out: int | None
    """`#wrong` of the out-of-place run; None when nccl-tests printed N/A (run with `-c 0`, no check)."""
    wrong_in: int | None


@dataclass(frozen=True)
class NcclRun:
    n_gpus: int
    """`nGpus` of the header (per process) times the ranks seen: the GPUs in the all-reduce."""
    devices: tuple[NcclDevice, ...]
    rows: tuple[NcclRow, ...]
    avg_busbw: float | None
    """The `# Avg bus bandwidth` line: kept for the record, never gated on (it averages small sizes in)."""
    out_of_bounds: int | None
    errors: tuple[str, ...]
    command: str
    """The line before the header, when the capture kept the command that ran it (`''` otherwise)."""

    @property
    def largest(self) -> NcclRow | None:
        return max(self.rows, key=lambda r: r.size_bytes) if self.rows else None

    @property
    def busbw(self) -> float | None:
        """Out-of-place busbw of the largest size (as NVIDIA's AICR validator reads it), the figure the gate uses."""
        row = self.largest
        return row.busbw_out if row else None

    @property
    def wrong(self) -> int:
        return sum((r.wrong_out or 0) + (r.wrong_in or 0) for r in self.rows)

    @property
    def ok(self) -> bool:
        """A table, no error line, no wrong element, no out-of-bounds value."""
        return bool(self.rows) and not self.errors and self.wrong == 0 and not self.out_of_bounds


def _num(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _count(token: str) -> int | None:
    value = _num(token)
    return None if value is None else int(value)


def _parse_one_run(lines: list[str], command: str) -> NcclRun:
    header = lines[0]
    n_gpus = int(re.search(r"nGpus\s+(\d+)", header).group(1))
    devices: list[NcclDevice] = []
    rows: list[NcclRow] = []
    columns: list[str] = []
    avg = oob = None
    errors: list[str] = []
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        if m := _RANK.match(line):
            devices.append(NcclDevice(int(m["rank"]), m["host"], int(m["device"]), m["bus"], m["name"]))
        elif line.startswith("#") and "busbw" in line and "size" in line:
            columns = line.lstrip("#").split()
        elif m := re.match(r"#\s*Avg bus bandwidth\s*:\s*(\S+)", line):
            avg = _num(m.group(1))
        elif m := re.match(r"#\s*Out of bounds values\s*:\s*(\d+)", line):
            oob = int(m.group(1))
        elif _FAILURE.search(line):
            errors.append(line)
        elif columns and not line.startswith("#") and line.split()[0].isdigit():
            # by whitespace, against the header's own column names: one capture is re-indented (PROVENANCE.md)
            tokens = line.split()
            if len(tokens) < len(columns):
                continue
            busbw = [i for i, c in enumerate(columns) if c == "busbw"]
            wrong = [i for i, c in enumerate(columns) if c == "#wrong"]
            rows.append(NcclRow(
                int(tokens[0]),
                _num(tokens[busbw[0]]) if busbw else None,
                _num(tokens[busbw[1]]) if len(busbw) > 1 else None,
                _count(tokens[wrong[0]]) if wrong else None,
                _count(tokens[wrong[1]]) if len(wrong) > 1 else None,
            ))
    return NcclRun(max(len(devices), n_gpus), tuple(devices), tuple(rows), avg, oob, tuple(errors), command)


def parse_all_reduce_perf(text: str) -> list[NcclRun]:
    """Every run in the text (one per `# nThread ... nGpus ...` header); an empty list when there is none.

    A run that dies (a CUDA error after `# Using devices`) has no rows and carries the error line: not `ok`.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"\s*#\s*nThread\s+\d+\s+nGpus\s+\d+", line)]
    runs = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        previous = lines[start - 1].strip() if start else ""
        command = "" if previous.startswith("#") else previous
        runs.append(_parse_one_run(lines[start:end], command))
    return runs


# ---------------------------------------------------------------------------------------------------------
# NCCL_DEBUG=INFO transport lines (formats: NCCL v2.30.7-1 src/transport/{p2p,shm,net}.cc, src/debug.cc)

_TRANSPORT = re.compile(r"NCCL INFO Channel (?P<channel>\d+)(?:/\d+)? : (?P<src>\d+)\[(?P<src_dev>\d+)\] -> "
                        r"(?P<dst>\d+)\[(?P<dst_dev>\d+)\](?: \[(?:send|receive)\])? via (?P<via>\S+)")


@dataclass(frozen=True)
class NcclTransport:
    channel: int
    src_rank: int
    src_dev: int
    dst_rank: int
    dst_dev: int
    via: str
    """`P2P/CUMEM/read`, `P2P/IPC`, `SHM/direct/direct`, `NET/IB/0/GDRDMA`, ..."""

    @property
    def kind(self) -> str:
        return self.via.split("/", 1)[0]


def parse_nccl_transports(text: str) -> list[NcclTransport]:
    """The `Channel NN : a[x] -> b[y] via KIND/...` lines NCCL logs at NCCL_DEBUG=INFO, in order."""
    return [NcclTransport(int(m["channel"]), int(m["src"]), int(m["src_dev"]), int(m["dst"]), int(m["dst_dev"]), m["via"])
            for m in map(_TRANSPORT.search, text.splitlines()) if m]


# ---------------------------------------------------------------------------------------------------------
# nvidia-smi topo -p2p {r,w,n,a,p}

P2P_STATUS = {
    "OK": "Status Ok",
    "CNS": "Chipset not supported",
    "GNS": "GPU not supported",
    "TNS": "Topology not supported",
    "NS": "Not supported",
    "U": "Unknown",
}
"""The legend nvidia-smi prints under every `topo -p2p` matrix (captured for `n` and `p`)."""


@dataclass(frozen=True)
class P2pMatrix:
    mode: str | None
    """r, w, n, a or p, from the `nvidia-smi topo -p2p X` line above the matrix; None when it was not kept."""
    gpus: tuple[str, ...]
    status: dict[tuple[int, int], str] = field(hash=False)
    """(i, j) -> OK, CNS, GNS, TNS, NS or U, for i != j."""

    def not_ok(self) -> list[tuple[int, int, str]]:
        return [(i, j, s) for (i, j), s in sorted(self.status.items()) if s != "OK"]


def parse_topo_p2p(text: str) -> list[P2pMatrix]:
    """Each matrix in the text, with its mode when the command line precedes it."""
    out: list[P2pMatrix] = []
    mode = None
    header: list[str] | None = None
    status: dict[tuple[int, int], str] = {}
    for raw in text.splitlines() + [""]:
        line = raw.strip()
        if m := re.search(r"topo\s+-p2p\s+([rwnap])\b", line):
            mode = m.group(1)
            continue
        tokens = line.split()
        if tokens and all(re.fullmatch(r"GPU\d+", t) for t in tokens):
            header, status = tokens, {}
            continue
        if header and tokens and re.fullmatch(r"GPU\d+", tokens[0]) and len(tokens) == len(header) + 1:
            i = int(tokens[0][3:])
            for j_name, cell in zip(header, tokens[1:]):
                j = int(j_name[3:])
                if i != j:
                    if cell not in P2P_STATUS:
                        raise ValueError(f"unknown P2P status {cell!r} for GPU{i}->GPU{j}")
                    status[(i, j)] = cell
            continue
        if header and status:
            out.append(P2pMatrix(mode, tuple(header), status))
            header, status, mode = None, {}, None
    return out


# ---------------------------------------------------------------------------------------------------------
# dcgmi diag (text table; DCGM 3.x and 4.x layouts)

DCGM_RESULTS = ("Pass", "Skip", "Warn", "Fail")
_SECTION = re.compile(r"^[|+]-{5}\s+(?P<name>\S.*?)\s+-+\+")
_MESSAGE_KINDS = ("Info", "Warning", "Error")


@dataclass(frozen=True)
class DcgmTest:
    category: str
    """Deployment, Integration, Hardware, Stress (DCGM 3.x) - the section the row sits in."""
    name: str
    """`GPU Memory`, `Persistence Mode`, `software` (DCGM 4.x lower case), ..."""
    result: str
    """Pass, Skip, Warn or Fail."""
    scope: str
    """What followed ` - ` (`All`, a GPU list) or `''`."""
    per_gpu: tuple[tuple[int, str], ...] = ()
    """DCGM 4.x `GPUn: Result` lines."""
    messages: tuple[tuple[str, str], ...] = ()
    """(Info|Warning|Error, text) rows under the test, the hard-wrapped cell rejoined."""

    def failed_gpus(self) -> tuple[int, ...]:
        """GPU indices this failure names: per-GPU lines, else `GPU n` at the start of its messages."""
        gpus = [g for g, r in self.per_gpu if r == "Fail"]
        if not gpus:
            gpus = [int(g) for kind, text in self.messages if kind != "Info" for g in re.findall(r"\bGPU (\d+)\b", text)]
        return tuple(sorted(set(gpus)))


@dataclass(frozen=True)
class DcgmDiag:
    metadata: dict[str, str] = field(hash=False)
    tests: tuple[DcgmTest, ...]

    @property
    def failed(self) -> list[DcgmTest]:
        return [t for t in self.tests if t.result == "Fail" or any(r == "Fail" for _, r in t.per_gpu)]

    @property
    def ok(self) -> bool:
        return bool(self.tests) and not self.failed


def _cells(line: str) -> tuple[str, str] | None:
    # 78 columns: `|` + 27 + `|` + 48 + `|`. The result cell holds 46 characters inside its padding, but DCGM
    # hard-wraps messages at 45 (every wrapped row of the captures ends in two blanks), so a continued message
    # is the first 45 of each row; a one-row value (metadata: 8 device IDs take 46) keeps all 46.
    if len(line) < 78 or line[0] != "|" or line[28] != "|" or line[77] != "|":
        return None
    return line[1:28].strip(), line[30:76]


def parse_dcgmi_diag(text: str) -> DcgmDiag:
    """The `dcgmi diag` table. No table (dcgmi could not reach its host engine, ...) is a ValueError.

    "Successfully ran diagnostic for group." is printed above failing tables too, so only the rows count.
    """
    lines = [line.rstrip("\n") for line in text.splitlines()]
    if not any(line.startswith("| Diagnostic") for line in lines):
        first = next((line.strip() for line in lines if line.strip()), "no output")
        raise ValueError(f"no dcgmi diag table: {first}")
    category = ""
    metadata: dict[str, str] = {}
    tests: list[dict] = []
    current_msg: list | None = None
    for line in lines:
        if m := _SECTION.match(line):
            category, current_msg = m.group("name"), None
            continue
        cells = _cells(line)
        if cells is None or cells[0] == "Diagnostic":
            continue
        name, chunk = cells
        if category == "Metadata":
            metadata[name] = chunk.strip()
            continue
        if name in _MESSAGE_KINDS and tests:
            current_msg = [name, chunk[:45]]
            tests[-1]["messages"].append(current_msg)
        elif name:
            result, _, scope = chunk.strip().partition(" - ")
            if result not in DCGM_RESULTS:
                raise ValueError(f"dcgmi diag: unknown result {chunk.strip()!r} for {name!r}")
            tests.append({"category": category, "name": name, "result": result, "scope": scope.strip(), "per_gpu": [], "messages": []})
            current_msg = None
        elif tests and (m := re.fullmatch(r"GPU(\d+):\s*(\w+)", chunk.strip())):
            tests[-1]["per_gpu"].append((int(m.group(1)), m.group(2)))
        elif current_msg is not None:
            current_msg[1] += chunk[:45]  # a hard-wrapped cell: the chunks join with no separator
    return DcgmDiag(metadata, tuple(
        DcgmTest(t["category"], t["name"], t["result"], t["scope"], tuple(t["per_gpu"]),
                 tuple((kind, re.sub(r"\s+", " ", body).strip()) for kind, body in t["messages"]))
        for t in tests))


# ---------------------------------------------------------------------------------------------------------
# expected bandwidth


@dataclass(frozen=True)
class Expected:
    model: str
    gpus: int
    busbw_gbps: float | None
    """None: no all-reduce for this node (one GPU, or nccl off)."""
    origin: str
    """`catalog` or `config`, or `n/a`."""
    source: str
    p2p_required: bool
    """The host wires these GPUs with NVLink (NVSwitch or not): P2P must be OK between every pair."""


def expected_busbw(model: str, gpus: int, config_gbps: dict[str, float] | None = None) -> Expected:
    """The all-reduce busbw a healthy node of `gpus` x `model` reaches, and where the figure comes from.

    - config (`burnIn.expectedBusbwGbps[model]`) wins when given: the operator's measurement of a healthy node;
    - else the catalog's sourced figure for the full board (config/catalog.INTERCONNECT), scaled for a
      partition of an NVSwitch board by the NVSwitches the partition gets (Fabric Manager guide §6: a GPU
      reaches the others only over the links to its partition's switches: A100 4 GPUs -> 3 of 6);
    - else None with origin `missing`: stacks/checks.py refuses the config by key.
    One GPU has nothing to all-reduce with: `n/a`.
    """
    ic = INTERCONNECT[model]
    p2p = ic.nvlink_generation > 0
    if gpus < 2:
        return Expected(model, gpus, None, "n/a", "one GPU: no all-reduce", p2p)
    if config_gbps and model in config_gbps:
        return Expected(model, gpus, float(config_gbps[model]), "config", f"burnIn.expectedBusbwGbps[{model}]", p2p)
    if ic.reference_busbw_gbps is None:
        return Expected(model, gpus, None, "missing", ic.source, p2p)
    figure, source = ic.reference_busbw_gbps, ic.source
    board = NVSWITCH_BOARD.get(model)
    if board is not None and gpus < board.gpus:
        switches = dict(board.partitions).get(gpus)
        if not switches:
            return Expected(model, gpus, None, "missing", f"{board.name} has no {gpus}-GPU partition with NVSwitches", p2p)
        figure = round(figure * switches / board.nvswitches, 1)
        source += f"; x {switches}/{board.nvswitches} NVSwitches of a {gpus}-GPU partition [fm §6]"
    return Expected(model, gpus, figure, "catalog", source, p2p)


def node_expected(gpu_models: list[str], config_gbps: dict[str, float] | None = None) -> Expected:
    """A node's expectation: its GPUs' model (a node mixes no models for burn-in; the slowest one is taken)."""
    options = [expected_busbw(m, len(gpu_models), config_gbps) for m in sorted(set(gpu_models))]
    with_figure = [e for e in options if e.busbw_gbps is not None]
    if len(options) == 1 or not with_figure:
        return options[0]
    return min(with_figure, key=lambda e: e.busbw_gbps)


# ---------------------------------------------------------------------------------------------------------
# the verdict

# What diagnoses each failure: the doctor check (doctor/diagnosis.py, section: check) or seed 003's step.
DIAGNOSE = {
    "cuda-init": "doctor `guest driver: Fabric Manager active` and `fabric state` (CUDA 'system not yet initialized' is "
                 "Fabric Manager down or mismatched); seed 003 §0 step 2 (driver health: nvidia-smi, dmesg Xid)",
    "persistence": "doctor `guest driver: persistence mode`; seed 003 §0 step 2",
    "memory": "doctor `guest driver: Xid errors` (Xid 48/63/64/94/95: memory, row remapping); seed 003 §0 step 2",
    "pcie": "doctor `hypervisor` checks (IOMMU groups, MMIO window) and `guest driver: GPU count and UUIDs`; seed 003 §0 step 2",
    "gpu": "doctor `guest driver` section; seed 003 §0 step 2 (driver health: nvidia-smi, dmesg Xid)",
    "bandwidth": "doctor `guest driver: NVLink` (links down or slow) and `fabric state`; `nvidia-smi topo -m` in the guest (seed 003 §0 step 2)",
    "p2p": "doctor `hypervisor` checks (ACS, IOMMU groups) and `guest driver: NVLink`; `nvidia-smi topo -p2p r` and `topo -m` in the guest",
    "nccl": "doctor `guest driver` section (Fabric Manager, NVLink, Xid); seed 003 §0 step 2",
}

_P2P_CAUSE = {
    "CNS": "chipset not supported: in a VM the guest's root complex refuses peer-to-peer, usually ACS on the path or no ATS "
           "on the passed-through devices (NCCL user guide, Troubleshooting: PCI Access Control Services)",
    "TNS": "topology not supported: the guest's PCIe topology lacks the host's (the GPUs sit on separate guest root ports, "
           "no PCIe switch between them)",
    "GNS": "GPU not supported (the driver refuses P2P on this GPU)",
    "NS": "not supported (NVLink down, or Fabric Manager has not trained the fabric)",
    "U": "unknown",
}


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    bus_id: str

    def __str__(self) -> str:
        return f"GPU {self.index} ({self.uuid}, {self.bus_id})"


@dataclass(frozen=True)
class Verdict:
    node: str
    ok: bool
    dcgm: str
    """pass, fail, skipped or missing."""
    busbw_gbps: float | None
    expected_gbps: float | None
    p2p: str
    """ok, fail, not-required, skipped or missing."""
    failures: tuple[str, ...]

    def as_output(self) -> dict:
        """The `burnIn` stack output's entry for the node."""
        return {"ok": self.ok, "dcgm": self.dcgm, "busbwGbps": self.busbw_gbps, "expectedBusbwGbps": self.expected_gbps,
                "p2p": self.p2p, "failures": list(self.failures)}


def _gpu_label(gpus: dict[int, Gpu], index: int) -> str:
    return str(gpus[index]) if index in gpus else f"GPU {index}"


def _dcgm_cause(test: DcgmTest) -> str:
    text = " ".join(t for _, t in test.messages)
    if "not yet initialized" in text or "cuInit" in text:
        return "cuda-init"
    if "ersistence" in test.name or "ersistence" in text:
        return "persistence"
    if "emory" in test.name:
        return "memory"
    if test.name.lower().startswith("pcie"):
        return "pcie"
    return "gpu"


def evaluate(node: str, gpus: list[Gpu], expected: Expected, *, min_fraction: float,
             dcgm_text: str | None, nccl_text: str | None, p2p_text: str | None) -> Verdict:
    """The gate: every failure is one line naming the node, the GPU or link, the test, and what diagnoses it.

    None for a text means that step did not run (disabled in config): it neither passes nor fails.
    An empty text means the step ran and printed nothing: a failure.
    """
    by_index = {g.index: g for g in gpus}
    failures: list[str] = []

    dcgm = "skipped"
    if dcgm_text is not None:
        try:
            diag = parse_dcgmi_diag(dcgm_text)
        except ValueError as err:
            dcgm = "missing"
            failures.append(f"{node}: dcgmi diag printed no result table ({err}); {DIAGNOSE['gpu']}")
        else:
            dcgm = "pass" if diag.ok else "fail"
            if not diag.tests:
                failures.append(f"{node}: dcgmi diag ran no test; {DIAGNOSE['gpu']}")
            for test in diag.failed:
                named = test.failed_gpus()
                if test.scope == "All" or not named:
                    where = f"all {len(by_index) or ''} GPUs".replace("  ", " ")
                else:
                    where = ", ".join(_gpu_label(by_index, g) for g in named)
                detail = next((t for _, t in test.messages), "")
                failures.append(f"{node}: {where}: dcgmi diag `{test.name}` ({test.category}) Fail"
                                + (f": {detail[:200]}" if detail else "") + f"; {DIAGNOSE[_dcgm_cause(test)]}")

    busbw = None
    if nccl_text is not None:
        runs = parse_all_reduce_perf(nccl_text)
        run = runs[-1] if runs else None
        if run is None:
            failures.append(f"{node}: all_reduce_perf printed no header (did not start); {DIAGNOSE['nccl']}")
        else:
            busbw = run.busbw
            if run.errors:
                failures.append(f"{node}: all_reduce_perf failed: {run.errors[0]}; {DIAGNOSE['cuda-init' if 'not yet initialized' in run.errors[0] else 'nccl']}")
            elif not run.rows:
                failures.append(f"{node}: all_reduce_perf printed no result table; {DIAGNOSE['nccl']}")
            if run.wrong:
                failures.append(f"{node}: all_reduce_perf found {run.wrong} wrong elements (data corruption across GPUs); {DIAGNOSE['memory']}")
            if run.out_of_bounds:
                failures.append(f"{node}: all_reduce_perf: {run.out_of_bounds} out-of-bounds values; {DIAGNOSE['memory']}")
            if busbw is not None and expected.busbw_gbps is not None and busbw < min_fraction * expected.busbw_gbps:
                row = run.largest
                failures.append(
                    f"{node}: NVLink/PCIe fabric: all_reduce_perf busbw {busbw:g} GB/s at {row.size_bytes} B (the largest size) is below "
                    f"{min_fraction:g} x expected {expected.busbw_gbps:g} GB/s = {min_fraction * expected.busbw_gbps:.1f} "
                    f"({expected.origin}: {expected.source}); {DIAGNOSE['bandwidth']}")
        transports = parse_nccl_transports(nccl_text)
        shm = [t for t in transports if t.kind == "SHM"]
        if expected.p2p_required and shm:
            t = shm[0]
            failures.append(f"{node}: link {_gpu_label(by_index, t.src_dev)} -> {_gpu_label(by_index, t.dst_dev)}: NCCL chose "
                            f"{t.via} instead of P2P ({len(shm)} SHM channels): P2P is off in the guest; {DIAGNOSE['p2p']}")

    p2p = "skipped"
    if p2p_text is not None:
        matrices = [m for m in parse_topo_p2p(p2p_text) if m.mode in (None, "r")]
        if not matrices:
            p2p = "missing"
            if expected.p2p_required:
                failures.append(f"{node}: nvidia-smi topo -p2p r printed no matrix; {DIAGNOSE['p2p']}")
        else:
            bad = matrices[0].not_ok()
            p2p = "ok" if not bad else ("fail" if expected.p2p_required else "not-required")
            if bad and expected.p2p_required:
                i, j, status = bad[0]
                failures.append(f"{node}: link {_gpu_label(by_index, i)} -> {_gpu_label(by_index, j)}: P2P read {status} "
                                f"({_P2P_CAUSE[status]}); {len(bad)} of {len(matrices[0].status)} GPU pairs not OK; {DIAGNOSE['p2p']}")

    return Verdict(node, not failures, dcgm, busbw, expected.busbw_gbps, p2p, tuple(failures))


# ---------------------------------------------------------------------------------------------------------
# which nodes burn in, and what each is expected to reach (plan, checks, compose)


@dataclass(frozen=True)
class NodePlan:
    node: str
    gpus: int
    """Physical GPUs: all_reduce_perf -g and dcgmi's GPU list."""
    request: int
    """What each burn-in Pod requests of the GPU resource: the node's whole allocatable (time-slicing replicas included)."""
    expected: Expected


def not_run_reason(cfg) -> str | None:
    """Why the stack runs no burn-in at all (None: it does, on every VM with GPUs)."""
    if not cfg.burn_in.enabled:
        return "burnIn.enabled is false"
    if cfg.guest is None or cfg.kubernetes is None or cfg.kubernetes.mode == "existing":
        return "gpu-stack does not manage the cluster (kubernetes.mode existing or no guest), so it cannot cordon the nodes"
    if not (cfg.addons.device_plugin.enabled or cfg.addons.gpu_operator.enabled):
        return "no device plugin or GPU Operator advertises the GPUs"
    return None


def skipped_nodes(cfg) -> dict[str, str]:
    """VMs with GPUs that do not burn in although the stack does, and why (the plan says so)."""
    if not_run_reason(cfg) is not None:
        return {}
    ts = cfg.addons.device_plugin.time_slicing if cfg.addons.device_plugin.enabled else None
    if ts is None or not ts.fail_requests_greater_than_one:
        return {}
    return {vm.name: f"its {len(vm.gpus)} time-sliced GPUs cannot all go to one Pod while "
                     "addons.devicePlugin.timeSlicing.failRequestsGreaterThanOne is true"
            for vm in cfg.vms if len(vm.gpus) > 1}


def node_plans(cfg) -> dict[str, NodePlan]:
    """VM name -> its burn-in, for every VM with GPUs (empty when not_run_reason; none for skipped_nodes)."""
    if not_run_reason(cfg) is not None:
        return {}
    ts = cfg.addons.device_plugin.time_slicing if cfg.addons.device_plugin.enabled else None
    skipped = skipped_nodes(cfg)
    out = {}
    for vm in cfg.vms:
        if not vm.gpus or vm.name in skipped:
            continue
        models = [g.model for g in vm.gpus]
        exp = node_expected(models, dict(cfg.burn_in.expected_busbw_gbps)) if cfg.burn_in.nccl else \
            Expected(models[0], len(models), None, "n/a", "burnIn.nccl is false", INTERCONNECT[models[0]].nvlink_generation > 0)
        # time-slicing: all the replicas, so nothing shares the GPUs during the burn-in; with failRequestsGreaterThanOne
        # a Pod may ask for one replica only, which is all of a one-GPU node (more GPUs: skipped_nodes)
        request = len(vm.gpus) if ts is None else (1 if ts.fail_requests_greater_than_one else len(vm.gpus) * ts.replicas)
        out[vm.name] = NodePlan(vm.name, len(vm.gpus), request, exp)
    return out
