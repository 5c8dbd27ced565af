"""A fake hypervisor for running scripts/host-facts.sh for real.

A temp sysfs root ($GS_SYSFS_ROOT) and proc root ($GS_PROC_ROOT) laid out as
the kernel does, and stubs of `virsh`, `lspci`, `modinfo` and `id` first on
PATH that answer from the same host description and log every call.

The host description can be built from the captured IOMMU-group listing
(tests/fixtures/host-facts/, PROVENANCE.md): its lines are `lspci -nns` output,
so they give each NVIDIA function's address, class, ids, product name and
group. What the listing does not hold (CPU, NUMA, BARs, versions) is declared
in `captured_hgx_h100` and said in PROVENANCE.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from config.types import format_cpu_list, parse_cpu_list

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "scripts" / "host-facts.sh"
PVE_SCRIPT = ROOT / "hypervisors" / "proxmox" / "host-facts.sh"
FIXTURES = ROOT / "tests" / "fixtures" / "host-facts"
LISTING = FIXTURES / "iommu-groups.8xH100-SXM-4xNVSwitch.kvm-host.txt"

MIB = 1 << 20
GIB = 1 << 30
# include/linux/ioport.h: IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_SIZEALIGN | IORESOURCE_MEM_64
FLAGS_MEM64_PREFETCH = 0x0014220C
FLAGS_MEM32 = 0x00040200
RESOURCE_LINES = 13  # 6 BARs, the ROM, 6 SR-IOV BARs (a non-bridge device on a kernel with CONFIG_PCI_IOV)

_LINE = re.compile(
    r"^IOMMU Group (?P<group>\d+) (?P<address>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?P<cls_name>.+?) \[(?P<cls>[0-9a-f]{4})\]: "
    r"(?P<desc>.+) \[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\](?: \(rev (?P<rev>[0-9a-f]+)\))?$"
)
VENDORS = {"10de": "NVIDIA Corporation"}


@dataclass(frozen=True)
class Bar:
    index: int
    start: int
    size: int
    flags: int


@dataclass(frozen=True)
class DeviceSpec:
    address: str
    class_code: int  # libvirt's <class>: class, subclass, prog-if
    vendor_id: int
    device_id: int
    product: str
    group: int
    numa_node: int | None
    driver: str | None
    bars: tuple[Bar, ...]
    lspci_line: str  # `lspci -Dnn` form


@dataclass(frozen=True)
class HostSpec:
    hostname: str
    phys_bits: int
    virt_bits: int
    cpu_model: str
    nodes: tuple[tuple[int, str, int], ...]  # id, cpulist, MemTotal kB
    smt: bool
    cmdline: str
    kernel: str
    virsh_version: str
    vfio_module: str | None
    vfio_loaded: bool
    devices: tuple[DeviceSpec, ...]
    iommu: bool = True
    hugepages_1g: tuple[tuple[int, int, int], ...] = ()
    """(node id, nr_hugepages, free_hugepages) of the nodes that have a hugepages-1048576kB pool; the captured host records none."""

    def device(self, address: str) -> DeviceSpec:
        return next(d for d in self.devices if d.address == address)


def parse_iommu_listing(text: str) -> list[dict]:
    """`IOMMU Group N <lspci -nns line>` lines, as the capture's loop prints them."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"line {n} is not an `IOMMU Group N <lspci -nns>` line: {line!r}")
        out.append(m.groupdict() | {"lspci": line.split(" ", 3)[3]})
    return out


def _path_parts(address: str) -> tuple[int, int, int, int]:
    d, b, sf = address.split(":")
    s, f = sf.split(".")
    return int(d, 16), int(b, 16), int(s, 16), int(f, 16)


def nodedev_xml(dev: DeviceSpec, members: list[str]) -> str:
    """`virsh nodedev-dumpxml` of a PCI function, in libvirt's element order (docs/formatnode.html).

    <path> and <parent> are the ones a device directly below a root port
    would have; the preflight reads neither.
    """
    d, b, s, f = _path_parts(dev.address)
    name = f"pci_{dev.address.replace(':', '_').replace('.', '_')}"
    root_bus = f"{d:04x}:{max(b - 1, 0):02x}"
    lines = [
        "<device>",
        f"  <name>{name}</name>",
        f"  <path>/sys/devices/pci{root_bus}/{root_bus}:01.0/{dev.address}</path>",
        f"  <parent>pci_{root_bus.replace(':', '_')}_01_0</parent>",
    ]
    if dev.driver:
        lines += ["  <driver>", f"    <name>{dev.driver}</name>", "  </driver>"]
    lines += [
        "  <capability type='pci'>",
        f"    <class>0x{dev.class_code:06x}</class>",
        f"    <domain>{d}</domain>",
        f"    <bus>{b}</bus>",
        f"    <slot>{s}</slot>",
        f"    <function>{f}</function>",
        f"    <product id='0x{dev.device_id:04x}'>{dev.product}</product>",
        f"    <vendor id='0x{dev.vendor_id:04x}'>{VENDORS.get(f'{dev.vendor_id:04x}', 'Unknown')}</vendor>",
    ]
    if members:
        lines.append(f"    <iommuGroup number='{dev.group}'>")
        for m in members:
            md, mb, ms, mf = _path_parts(m)
            lines.append(f"      <address domain='0x{md:04x}' bus='0x{mb:02x}' slot='0x{ms:02x}' function='0x{mf:x}'/>")
        lines.append("    </iommuGroup>")
    if dev.numa_node is not None:
        lines.append(f"    <numa node='{dev.numa_node}'/>")
    lines += [
        "    <pci-express>",
        "      <link validity='cap' port='0' speed='32' width='16'/>",
        "      <link validity='sta' speed='32' width='16'/>",
        "    </pci-express>",
        "  </capability>",
        "</device>",
    ]
    return "\n".join(lines) + "\n"


def resource_text(dev: DeviceSpec) -> str:
    rows = {b.index: b for b in dev.bars}
    out = []
    for i in range(RESOURCE_LINES):
        b = rows.get(i)
        out.append(f"0x{b.start:016x} 0x{b.start + b.size - 1:016x} 0x{b.flags:016x}" if b else f"0x{0:016x} 0x{0:016x} 0x{0:016x}")
    return "\n".join(out) + "\n"


# --- the captured host -------------------------------------------------------

# Not in the capture, declared here (PROVENANCE.md): a DGX/HGX H100 layout.
H100_BARS = ((0, 16 * MIB), (2, 128 * GIB), (4, 32 * MIB))  # fastfetch-cli/fastfetch#1658: Region 0/2/4, 64-bit prefetchable
NVSWITCH_BARS = ((0, 32 * MIB),)  # config/catalog.py: NVSwitch Gen3 BAR0
CAPTURE_NODES = ((0, "0-55,112-167", 1056636928), (1, "56-111,168-223", 1056964608))
CAPTURE_VIRSH_VERSION = (
    "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\n"
    "Using API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.22\n\n"
)
# `pveversion` on a Proxmox VE 9.1 node: pve-manager/<VERSION>/<REPOID> (running kernel: <uname -r>), as
# pve-manager bin/pveversion prints PVE::pvecfg::package() . '/' . version_text() (PVE/pvecfg.pm.in:
# '@VERSION@/@REPOID@', REPOID a 16-hex-digit git id, Makefile/PVE/Makefile). Version, id and kernel are ours.
CAPTURE_PVE_KERNEL = "6.17.2-1-pve"
CAPTURE_PVEVERSION = f"pve-manager/9.1.4/5ac30304265fbd8e (running kernel: {CAPTURE_PVE_KERNEL})\n"
ISOLATED_GROUPS = {"0000:12:00.0": 90, "0000:87:00.0": 91}  # as if ACS split groups 29 and 58


def captured_hgx_h100(isolated: bool = False, hostname: str = "hgx-h100-1") -> HostSpec:
    """The host of the captured IOMMU-group listing; `isolated`: the same host with every GPU in its own group."""
    entries = parse_iommu_listing(LISTING.read_text())
    devices = []
    mmio = 0x2A0000000000
    for e in entries:
        address = e["address"]
        group = ISOLATED_GROUPS.get(address, int(e["group"])) if isolated else int(e["group"])
        bus = _path_parts(address)[1]
        switch = e["cls"] == "0680"
        bars = []
        for index, size in NVSWITCH_BARS if switch else H100_BARS:
            mmio = (mmio + size - 1) // size * size
            bars.append(Bar(index, mmio, size, FLAGS_MEM64_PREFETCH))
            mmio += size
        vendor_name = VENDORS[e["vendor"]]
        devices.append(DeviceSpec(
            address=address,
            class_code=int(e["cls"], 16) << 8,
            vendor_id=int(e["vendor"], 16),
            device_id=int(e["device"], 16),
            product=e["desc"].removeprefix(vendor_name + " "),
            group=group,
            numa_node=0 if bus < 0x80 else 1,
            driver="vfio-pci",
            bars=tuple(bars),
            lspci_line=e["lspci"],
        ))
    return HostSpec(
        hostname=f"{hostname}.lab.local",
        phys_bits=46,
        virt_bits=57,
        cpu_model="Intel(R) Xeon(R) Platinum 8480C",
        nodes=CAPTURE_NODES,
        smt=True,
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-41-amd64 ro quiet intel_iommu=on iommu=pt",
        kernel="6.1.0-41-amd64",
        virsh_version=CAPTURE_VIRSH_VERSION,
        vfio_module="/lib/modules/6.1.0-41-amd64/kernel/drivers/vfio/pci/vfio-pci.ko",
        vfio_loaded=True,
        devices=tuple(sorted(devices, key=lambda d: d.address)),
    )


# --- the sandbox -------------------------------------------------------------

VIRSH = r"""#!/usr/bin/env bash
printf 'virsh %s\n' "$*" >> "$STUB_DATA/calls.log"
[ "$1" = "-c" ] && shift 2
case "$1" in
  nodedev-dumpxml)
    f="$STUB_DATA/nodedev/$2.xml"
    if [ -f "$f" ]; then cat "$f"; else echo "error: Could not find matching device '$2'" >&2; exit 1; fi ;;
  version) cat "$STUB_DATA/virsh-version" ;;
  *) echo "virsh stub: unexpected $*" >&2; exit 2 ;;
esac
"""
LSPCI = r"""#!/usr/bin/env bash
printf 'lspci %s\n' "$*" >> "$STUB_DATA/calls.log"
vendor=""
while [ $# -gt 0 ]; do case "$1" in -d) vendor=${2%%:*}; shift 2 ;; *) shift ;; esac; done
while IFS= read -r line; do
  case "$line" in *"[$vendor:"*) printf '%s\n' "$line" ;; esac
done < "$STUB_DATA/lspci.txt"
"""
MODINFO = r"""#!/usr/bin/env bash
printf 'modinfo %s\n' "$*" >> "$STUB_DATA/calls.log"
if [ -f "$STUB_DATA/modinfo-vfio-pci" ] && [ "$2" = "vfio-pci" ]; then cat "$STUB_DATA/modinfo-vfio-pci"; exit 0; fi
echo "modinfo: ERROR: Module $2 not found." >&2; exit 1
"""
PVEVERSION = r"""#!/usr/bin/env bash
printf 'pveversion %s\n' "$*" >> "$STUB_DATA/calls.log"
[ $# -eq 0 ] || { echo "pveversion stub: unexpected $*" >&2; exit 2; }
cat "$STUB_DATA/pveversion"
"""
ID = r"""#!/usr/bin/env bash
if [ "$1" = "-u" ]; then cat "$STUB_DATA/uid"; else exec /usr/bin/id "$@"; fi
"""


@dataclass
class HostSandbox:
    tmp: Path
    spec: HostSpec
    uid: int = 0
    lspci_text: str | None = None
    """What `lspci -Dnn` prints; default: the spec's devices."""
    env: dict = field(default_factory=dict)
    script: Path = SCRIPT
    """The collector to run: scripts/host-facts.sh (libvirt) or PVE_SCRIPT (a Proxmox VE node)."""
    pveversion: str | None = None
    """What the `pveversion` stub prints; None: no pveversion on PATH (not a Proxmox VE node)."""

    def __post_init__(self):
        self.sys = self.tmp / "sys"
        self.proc = self.tmp / "proc"
        self.data = self.tmp / "stub"
        self.bin = self.tmp / "bin"
        for d in (self.sys, self.proc / "sys" / "kernel", self.data / "nodedev", self.bin):
            d.mkdir(parents=True, exist_ok=True)
        self._write_sysfs()
        self._write_proc()
        self._write_stubs()

    def _write_sysfs(self):
        s = self.spec
        pci = self.sys / "bus" / "pci"
        groups: dict[int, list[str]] = {}
        for dev in s.devices:
            groups.setdefault(dev.group, []).append(dev.address)
        for dev in s.devices:
            d = pci / "devices" / dev.address
            d.mkdir(parents=True)
            (d / "resource").write_text(resource_text(dev))
            (d / "numa_node").write_text(f"{-1 if dev.numa_node is None else dev.numa_node}\n")
            (d / "vendor").write_text(f"0x{dev.vendor_id:04x}\n")
            (d / "device").write_text(f"0x{dev.device_id:04x}\n")
            (d / "class").write_text(f"0x{dev.class_code:06x}\n")
            if dev.driver:
                (pci / "drivers" / dev.driver).mkdir(parents=True, exist_ok=True)
                (d / "driver").symlink_to(f"../../drivers/{dev.driver}")
            if s.iommu:
                g = self.sys / "kernel" / "iommu_groups" / str(dev.group) / "devices"
                g.mkdir(parents=True, exist_ok=True)
                (g / dev.address).symlink_to(f"../../../../bus/pci/devices/{dev.address}")
                (d / "iommu_group").symlink_to(f"../../../../kernel/iommu_groups/{dev.group}")
            members = sorted(groups[dev.group]) if s.iommu else []
            (self.data / "nodedev" / f"pci_{dev.address.replace(':', '_').replace('.', '_')}.xml").write_text(nodedev_xml(dev, members))
        if s.iommu:
            (self.sys / "kernel" / "iommu_groups").mkdir(parents=True, exist_ok=True)
        cpus = []
        for node_id, cpulist, mem_kib in s.nodes:
            n = self.sys / "devices" / "system" / "node" / f"node{node_id}"
            n.mkdir(parents=True)
            (n / "cpulist").write_text(cpulist + "\n")
            (n / "meminfo").write_text(f"Node {node_id} MemTotal:       {mem_kib} kB\nNode {node_id} MemFree:        {mem_kib - 4194304} kB\n")
            pools = {i: (total, free) for i, total, free in s.hugepages_1g}
            if node_id in pools:
                pool = n / "hugepages" / "hugepages-1048576kB"
                pool.mkdir(parents=True)
                (pool / "nr_hugepages").write_text(f"{pools[node_id][0]}\n")
                (pool / "free_hugepages").write_text(f"{pools[node_id][1]}\n")
            cpus += parse_cpu_list(cpulist)
        cpu_root = self.sys / "devices" / "system" / "cpu"
        cpus = sorted(cpus)
        half = len(cpus) // 2
        for c in cpus:
            t = cpu_root / f"cpu{c}" / "topology"
            t.mkdir(parents=True)
            sibling = (c + half if c < half else c - half) if s.smt else c
            (t / "thread_siblings_list").write_text(format_cpu_list([c, sibling]) + "\n")
        (cpu_root / "online").write_text(format_cpu_list(cpus) + "\n")
        (cpu_root / "smt").mkdir()
        (cpu_root / "smt" / "active").write_text("1\n" if s.smt else "0\n")
        if s.vfio_loaded:
            (self.sys / "module" / "vfio_pci").mkdir(parents=True)
            (pci / "drivers" / "vfio-pci").mkdir(parents=True, exist_ok=True)

    def _write_proc(self):
        s = self.spec
        block = (f"processor\t: {{n}}\nvendor_id\t: GenuineIntel\nmodel name\t: {s.cpu_model}\n"
                 f"address sizes\t: {s.phys_bits} bits physical, {s.virt_bits} bits virtual\n\n")
        (self.proc / "cpuinfo").write_text(block.format(n=0) + block.format(n=1))
        (self.proc / "cmdline").write_text(s.cmdline + "\n")
        (self.proc / "meminfo").write_text(f"MemTotal:       {sum(n[2] for n in s.nodes)} kB\n")
        (self.proc / "sys" / "kernel" / "hostname").write_text(s.hostname + "\n")
        (self.proc / "sys" / "kernel" / "osrelease").write_text(s.kernel + "\n")

    def _write_stubs(self):
        s = self.spec
        (self.data / "virsh-version").write_text(s.virsh_version)
        (self.data / "lspci.txt").write_text(self.lspci_text if self.lspci_text is not None else "".join(d.lspci_line + "\n" for d in s.devices))
        if s.vfio_module:
            (self.data / "modinfo-vfio-pci").write_text(s.vfio_module + "\n")
        (self.data / "uid").write_text(f"{self.uid}\n")
        (self.data / "calls.log").write_text("")
        stubs = [("virsh", VIRSH), ("lspci", LSPCI), ("modinfo", MODINFO), ("id", ID)]
        if self.pveversion is not None:
            (self.data / "pveversion").write_text(self.pveversion)
            stubs.append(("pveversion", PVEVERSION))
        for name, text in stubs:
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    @property
    def calls(self) -> list[str]:
        return (self.data / "calls.log").read_text().splitlines()

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        full = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "GS_SYSFS_ROOT": str(self.sys),
            "GS_PROC_ROOT": str(self.proc),
            "STUB_DATA": str(self.data),
            "SOURCE_DATE_EPOCH": "1764547200",  # 2025-12-01: byte-identical fixtures
            "LC_ALL": "C",
            **self.env,
            **env,
        }
        return subprocess.run(["bash", str(self.script), *args], env=full, capture_output=True, text=True)

    def facts(self, *args: str) -> dict:
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def pve_sandbox(tmp: Path, isolated: bool = False, pveversion: str = CAPTURE_PVEVERSION, **changes) -> HostSandbox:
    """The captured host as a Proxmox VE node: its kernel a -pve one, `pveversion` on PATH, the Proxmox collector to run."""
    spec = replace(captured_hgx_h100(isolated=isolated), kernel=CAPTURE_PVE_KERNEL,
                   cmdline=f"BOOT_IMAGE=/boot/vmlinuz-{CAPTURE_PVE_KERNEL} root=/dev/mapper/pve-root ro quiet intel_iommu=on iommu=pt")
    return HostSandbox(tmp, replace(spec, **changes), script=PVE_SCRIPT, pveversion=pveversion)


def with_spec(spec: HostSpec, **changes) -> HostSpec:
    return replace(spec, **changes)


FACTS_FILES = {"hgx-h100-shared.json": False, "hgx-h100-isolated.json": True}
NODEDEV_FILES = {"nodedev.h100-sxm5.0000_11_00_0.xml": "0000:11:00.0", "nodedev.nvswitch.0000_05_00_0.xml": "0000:05:00.0"}


def fixture_texts(tmp: Path) -> dict[str, str]:
    """What tests/fixtures/host-facts/ holds besides the captures: the script's output on the captured host."""
    out = {}
    for name, isolated in FACTS_FILES.items():
        box = HostSandbox(tmp / name, captured_hgx_h100(isolated=isolated))
        proc = box.run()
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        out[name] = proc.stdout
    spec = captured_hgx_h100()
    for name, address in NODEDEV_FILES.items():
        dev = spec.device(address)
        out[name] = nodedev_xml(dev, sorted(d.address for d in spec.devices if d.group == dev.group))
    return out


if __name__ == "__main__":  # python -m tests.support.host_sandbox: rewrite the derived fixtures
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in fixture_texts(Path(tmp)).items():
            (FIXTURES / name).write_text(text)
            print(f"wrote {FIXTURES.relative_to(ROOT) / name}")
