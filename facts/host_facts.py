"""Host facts: what scripts/host-facts.sh recorded on a hypervisor, for the preflight offline.

A facts file (format `gpu-stack-host-facts/1`, docs/OPERATIONS.md) holds, for
one host, each device's `virsh nodedev-dumpxml` and sysfs `resource`, the
CPU's physical address bits, the NUMA nodes' CPUs and memory, the SMT sibling
lists, whether the IOMMU is on and vfio-pci available, and the libvirt and
QEMU versions. The nodedev XML goes through render/iommu.parse_node_device,
the same function that reads getNodeDeviceInfo's result, so a facts file
feeds the same IOMMU-group check (resolve_passthrough) as `pulumi preview`.

A Proxmox VE node has no virsh: hypervisors/proxmox/host-facts.sh writes the
same format with each device's identity as sysfs holds it (`sysfs`: class,
vendor, device, numa_node, iommu_group and its members; the files
GET /nodes/{node}/hardware/pci reads, pve-common PVE/SysFSTools.pm lspci) in
place of `nodedevXml`, and a `proxmox` section (`pveversion`) in place of
`libvirt`. Each device has one of the two forms, each file one of the two
sections; everything else is the same and checked the same.

Readers ignore keys they do not know; a change of meaning bumps the `/1`.
A bad file is a FactsError naming the file and the field, never a traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from config.catalog import GIB, MIB
from render.hypervisor import domain_elements, version_problems
from render.iommu import NodeDevice, nodedev_name, parse_node_device
from render.mmio import hole64_gib, hole64_gib_for
from render.numa import Placement
from config.models import StackConfig
from config.errors import ConfigIssue, loc_to_path
from config.types import format_cpu_list, parse_cpu_list, version_key, version_tuple

FORMAT = "gpu-stack-host-facts/1"
ENV = "GPU_STACK_HOST_FACTS"
"""Environment variable the program reads: facts files separated by os.pathsep (':' on Linux)."""

# include/linux/ioport.h
IORESOURCE_MEM = 0x00000200
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_MEM_64 = 0x00100000
BAR_LINES = 6  # sysfs `resource`: lines 0-5 are the BARs, 6 the ROM, then bridge windows / SR-IOV BARs

_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True)
class FactsIssue(ConfigIssue):
    """A problem in a facts file: `path` is the field inside the file `source`."""

    source: str = ""

    def __str__(self) -> str:
        return f"host facts {self.source}: {self.path}: {self.message}"


class FactsError(ValueError):
    def __init__(self, source: str, field: str, message: str):
        self.issue = FactsIssue(field, message, source)
        super().__init__(str(self.issue))


# --- the file's shape (pydantic: field paths in errors for free) --------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True)


class _Cpu(_Model):
    phys_addr_bits: int = Field(ge=32, le=64)
    """`address sizes : N bits physical` of /proc/cpuinfo."""
    virt_addr_bits: Optional[int] = None
    model: str = ""


class _NumaNode(_Model):
    id: int = Field(ge=0)
    cpus: str
    """/sys/devices/system/node/nodeN/cpulist."""
    memory_kib: int = Field(ge=0)
    """`Node N MemTotal` of /sys/devices/system/node/nodeN/meminfo."""
    hugepages1g: Optional[int] = Field(default=None, ge=0, alias="hugepages1g")
    """The node's pool of 1 GiB hugepages (nodeN/hugepages/hugepages-1048576kB/nr_hugepages), what the
    preflight counts the VMs against; None in facts files written before scripts/host-facts.sh recorded it
    (still loadable: the count is then not checked)."""
    free_hugepages1g: Optional[int] = Field(default=None, ge=0, alias="freeHugepages1g")
    """Free 1 GiB hugepages of the node when the facts were taken (nodeN/.../free_hugepages). Recorded,
    never checked: the running VMs of the very stack being planned hold theirs (see hugepage_issues)."""

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: str) -> str:
        parse_cpu_list(v)
        return v


class _Smt(_Model):
    active: Optional[bool] = None
    siblings: tuple[str, ...]
    """Distinct /sys/devices/system/cpu/cpu*/topology/thread_siblings_list values."""

    @field_validator("siblings")
    @classmethod
    def _siblings(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            parse_cpu_list(item)
        return v


class _Iommu(_Model):
    enabled: bool
    groups: int = Field(ge=0)
    """Entries of /sys/kernel/iommu_groups."""
    cmdline: tuple[str, ...] = ()
    """The IOMMU arguments of /proc/cmdline."""


class _VfioPci(_Model):
    available: bool
    loaded: bool = False
    module: str = ""


class _Libvirt(_Model):
    libvirt_version: str
    qemu_version: str
    uri: str = ""

    @field_validator("libvirt_version", "qemu_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.match(v):
            raise ValueError(f"{v!r} is not a version like 10.0.0 (from `virsh version`)")
        return v


class _Proxmox(_Model):
    release: str
    """The Proxmox VE release (x.y) of `pveversion`: pve-manager/<version>/<repoid>, release = version's first two parts
    (pve-manager bin/pveversion, PVE/pvecfg.pm.in, Makefile PVERELEASE), what getVersion's `release` reports at preview."""
    manager_version: str = ""
    node: str = ""

    @field_validator("release")
    @classmethod
    def _release(cls, v: str) -> str:
        if not re.match(r"^\d+\.\d+$", v):
            raise ValueError(f"{v!r} is not a Proxmox VE release like 9.1 (from `pveversion`)")
        return v


class _Sysfs(_Model):
    """A PCI function as /sys/bus/pci/devices/<address>/ holds it (hypervisors/proxmox/host-facts.sh)."""

    class_: str = Field(alias="class")
    """`class`: 0xCCSSPP."""
    vendor: str
    device: str
    numa_node: int = Field(ge=-1)
    """`numa_node`: -1 where the platform reports none."""
    iommu_group: int = Field(ge=-1)
    """The number `iommu_group` links to; -1: no link (the IOMMU is off)."""
    iommu_group_members: tuple[str, ...] = ()
    """/sys/kernel/iommu_groups/<group>/devices."""

    @field_validator("class_", "vendor", "device")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not re.match(r"^0x[0-9a-f]+$", v):
            raise ValueError(f"{v!r} is not a hex number like 0x10de as sysfs prints it")
        return v


class _Device(_Model):
    address: str
    requested: bool = False
    driver: Optional[str] = None
    nodedev_xml: Optional[str] = None
    """`virsh nodedev-dumpxml` (scripts/host-facts.sh); or `sysfs` (hypervisors/proxmox/host-facts.sh)."""
    sysfs: Optional[_Sysfs] = None
    resource: str

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not _PCI.match(v):
            raise ValueError(f"{v!r} is not a PCI address like 0000:17:00.0")
        return v


class _Facts(_Model):
    format: str
    host: str
    cpu: _Cpu
    numa_nodes: tuple[_NumaNode, ...] = Field(min_length=1)
    smt: _Smt
    iommu: _Iommu
    vfio_pci: _VfioPci
    libvirt: Optional[_Libvirt] = None
    proxmox: Optional[_Proxmox] = None
    devices: tuple[_Device, ...]

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v != FORMAT:
            raise ValueError(f"{v!r} is not a format this gpu-stack reads; expected {FORMAT!r} (written by scripts/host-facts.sh)")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _HOST.match(v):
            raise ValueError(f"{v!r} is not a host name as in gpu-stack:hosts[].name; rerun scripts/host-facts.sh --host <name>")
        return v


# --- the model the checks use ------------------------------------------------


@dataclass(frozen=True)
class Bar:
    index: int
    size: int
    is_64bit: bool
    prefetchable: bool


@dataclass(frozen=True)
class FactsDevice:
    node: NodeDevice
    bars: tuple[Bar, ...]
    requested: bool
    driver: str | None

    @property
    def bar64_bytes(self) -> int:
        """What this function needs in the 64-bit PCI hole: its 64-bit memory BARs."""
        return sum(b.size for b in self.bars if b.is_64bit)


@dataclass(frozen=True)
class FactsNumaNode:
    id: int
    cpus: tuple[int, ...]
    memory_kib: int
    hugepages_1g: int | None = None
    """nr_hugepages of the node's hugepages-1048576kB pool; None: not recorded (older facts)."""
    free_hugepages_1g: int | None = None
    """free_hugepages of that pool when the facts were taken; informational only."""


@dataclass(frozen=True)
class HostFacts:
    source: str
    host: str
    phys_addr_bits: int
    numa_nodes: tuple[FactsNumaNode, ...]
    smt_siblings: tuple[tuple[int, ...], ...]
    """Each SMT core's hardware threads, e.g. (0, 112); one CPU each without SMT."""
    iommu_enabled: bool
    iommu_groups: int
    iommu_cmdline: tuple[str, ...]
    vfio_pci_available: bool
    libvirt_version: tuple[int, ...] | None
    """None in facts from a Proxmox VE node (no libvirt there)."""
    qemu_version: tuple[int, ...] | None
    devices: dict[str, FactsDevice]
    pve_release: str | None = None
    """The node's Proxmox VE release (x.y, `pveversion`) in facts from hypervisors/proxmox/host-facts.sh; else None."""

    @property
    def node_devices(self) -> dict[str, NodeDevice]:
        return {a: d.node for a, d in self.devices.items()}

    def numa_node(self, node_id: int) -> FactsNumaNode | None:
        return next((n for n in self.numa_nodes if n.id == node_id), None)


def parse_resource(text: str) -> tuple[Bar, ...]:
    """The BARs in a sysfs `resource` file: one `start end flags` line (hex) per resource."""
    bars = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        fields = line.split()
        try:
            start, end, flags = (int(f, 16) for f in fields)
        except ValueError:
            raise ValueError(f"line {i + 1} is {line!r}; expected three hex numbers `start end flags` as in /sys/bus/pci/devices/<addr>/resource") from None
        if i < BAR_LINES and flags & IORESOURCE_MEM and end > start:
            bars.append(Bar(i, end - start + 1, bool(flags & IORESOURCE_MEM_64), bool(flags & IORESOURCE_PREFETCH)))
    return tuple(bars)


_LSPCI_MEMORY = re.compile(r"^\s*(?:Region (\d+): )?Memory at (?:\S+) \((32|64)-bit, (non-)?prefetchable\)(?: \[disabled\])?(?: \[size=(\d+)([KMGT]?)\])?")
_LSPCI_IO = re.compile(r"^\s*(?:Region (\d+): )?I/O ports at ")
_SIZE_UNITS = {"": 1, "K": 1024, "M": MIB, "G": GIB, "T": 1024 * GIB}


def parse_lspci_regions(text: str) -> tuple[Bar, ...]:
    """One device's memory BARs from `lspci -v`/`-vv` (`[Region N: ]Memory at ... (64-bit, prefetchable) [size=256G]`).

    `lspci -vv` numbers the BARs (`Region N:`); `lspci -v` does not, so each
    BAR takes the next index (two for a 64-bit one, which spans two
    registers). A BAR lspci prints without a size (`Memory at <ignored>`,
    unassigned) keeps its index and is left out.
    """
    bars = []
    index = 0
    for line in text.splitlines():
        if m := _LSPCI_IO.match(line):
            index = int(m.group(1)) + 1 if m.group(1) else index + 1
            continue
        if not (m := _LSPCI_MEMORY.match(line)):
            continue
        region, width, non_prefetchable, size, unit = m.groups()
        index = int(region) if region else index
        if size:
            bars.append(Bar(index, int(size) * _SIZE_UNITS[unit], width == "64", not non_prefetchable))
        index += 2 if width == "64" else 1
    return tuple(bars)


def parse_host_facts(text: str | bytes, source: str) -> HostFacts:
    """A facts document to HostFacts; FactsError naming `source` and the field on anything wrong."""
    try:
        data: Any = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as e:
        raise FactsError(source, "(file)", f"is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise FactsError(source, "(file)", f"is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, dict):
        raise FactsError(source, "(file)", f"is a JSON {type(data).__name__}; expected an object with \"format\": {FORMAT!r}")
    if data.get("format") != FORMAT:
        raise FactsError(source, "format", f"is {data.get('format')!r}; expected {FORMAT!r} (written by scripts/host-facts.sh)")
    try:
        raw = _Facts.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        raise FactsError(source, loc_to_path(tuple(err["loc"])) or "(file)", msg) from None
    if (raw.libvirt is None) == (raw.proxmox is None):
        raise FactsError(source, "(file)", ("has neither" if raw.libvirt is None else "has both") + " a libvirt and a proxmox section; a file is written "
                         "on one hypervisor, by scripts/host-facts.sh (libvirt section) or hypervisors/proxmox/host-facts.sh (proxmox section)")

    devices: dict[str, FactsDevice] = {}
    for i, d in enumerate(raw.devices):
        field = f"devices[{i}]"
        if d.address in devices:
            raise FactsError(source, f"{field}.address", f"{d.address} is listed twice")
        if (d.nodedev_xml is None) == (d.sysfs is None):
            raise FactsError(source, f"{field}.nodedevXml", "required field is missing" if d.sysfs is None else "and sysfs are both set; a device has one of them")
        if d.sysfs is not None:
            node = _sysfs_node_device(source, field, d.address, d.sysfs)
            if node.iommu_group < 0 and raw.iommu.enabled:
                raise FactsError(source, f"{field}.sysfs.iommuGroup", f"is -1 (no iommu_group link) while {raw.iommu.groups} IOMMU groups exist on {raw.host}")
        else:
            assert d.nodedev_xml is not None
            try:
                node = parse_node_device(d.address, None, d.nodedev_xml)
            except ValueError as e:
                raise FactsError(source, f"{field}.nodedevXml", str(e)) from None
            name = _xml_name(d.nodedev_xml)
            if name is not None and name != nodedev_name(d.address):
                raise FactsError(source, f"{field}.nodedevXml", f"is the XML of {name}, not of {d.address} ({nodedev_name(d.address)})")
            if node.iommu_group < 0 and raw.iommu.enabled:
                raise FactsError(source, f"{field}.nodedevXml", f"has no <iommuGroup>: the IOMMU is off on {raw.host}, or the XML is not from `virsh nodedev-dumpxml`")
        try:
            bars = parse_resource(d.resource)
        except ValueError as e:
            raise FactsError(source, f"{field}.resource", str(e)) from None
        devices[d.address] = FactsDevice(node, bars, d.requested, d.driver)
    index = {a: i for i, a in enumerate(devices)}
    for address, dev in devices.items():
        for member in dev.node.group_members:
            if member not in devices:
                raise FactsError(source, f"devices[{index[address]}]." + ("sysfs" if raw.devices[index[address]].sysfs is not None else "nodedevXml"),
                                 f"IOMMU group {dev.node.iommu_group} of {address} also holds {member}, which has no entry in devices; "
                                 f"rerun scripts/host-facts.sh on {raw.host} (it records every member of a requested device's group)")

    try:
        nodes = tuple(FactsNumaNode(n.id, parse_cpu_list(n.cpus), n.memory_kib, n.hugepages1g, n.free_hugepages1g) for n in raw.numa_nodes)
        siblings = tuple(sorted({parse_cpu_list(s) for s in raw.smt.siblings}))
    except ValueError as e:  # validated above; kept for the type checker's sake
        raise FactsError(source, "numaNodes", str(e)) from None
    return HostFacts(
        source=source,
        host=raw.host,
        phys_addr_bits=raw.cpu.phys_addr_bits,
        numa_nodes=nodes,
        smt_siblings=siblings,
        iommu_enabled=raw.iommu.enabled,
        iommu_groups=raw.iommu.groups,
        iommu_cmdline=raw.iommu.cmdline,
        vfio_pci_available=raw.vfio_pci.available,
        libvirt_version=version_tuple(raw.libvirt.libvirt_version) if raw.libvirt else None,
        qemu_version=version_tuple(raw.libvirt.qemu_version) if raw.libvirt else None,
        devices=devices,
        pve_release=raw.proxmox.release if raw.proxmox else None,
    )


def _sysfs_node_device(source: str, field: str, address: str, s: _Sysfs) -> NodeDevice:
    """A device's sysfs record as the IOMMU rule's NodeDevice (what parse_node_device gives from the nodedev XML).

    sysfs `class` is 0xCCSSPP like libvirt's <class>; vendor and device are the ids of <vendor id> and <product id>.
    sysfs has no product name: the ids stand in for it."""
    members = tuple(sorted(s.iommu_group_members)) if s.iommu_group >= 0 else (address,)
    if s.iommu_group >= 0 and address not in members:
        raise FactsError(source, f"{field}.sysfs.iommuGroupMembers", f"do not hold {address} itself: iommu_group/devices of group {s.iommu_group} lists every member")
    for m in members:
        if not _PCI.match(m):
            raise FactsError(source, f"{field}.sysfs.iommuGroupMembers", f"{m!r} is not a PCI address like 0000:17:00.0")
    return NodeDevice(address=address, vendor_id=int(s.vendor, 16), class_code=int(s.class_, 16), product=f"[{s.vendor[2:]}:{s.device[2:]}]",
                      numa_node=None if s.numa_node < 0 else s.numa_node, iommu_group=s.iommu_group, group_members=members, product_id=int(s.device, 16))


def _xml_name(xml: str) -> str | None:
    m = re.search(r"<name>\s*([^<]+?)\s*</name>", xml)
    return m.group(1) if m else None


def load_host_facts(path: str | Path) -> HostFacts:
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FactsError(source, "(file)", f"cannot be read: {e.strerror}") from None
    return parse_host_facts(data, source)


# --- matching files to hosts, and the checks ---------------------------------


def match_host_facts(cfg: StackConfig, facts: list[HostFacts]) -> tuple[dict[str, HostFacts], list[ConfigIssue]]:
    """Facts by host name; a file for an unknown host, or two files for one host, is an issue."""
    names = [h.name for h in cfg.hosts]
    out: dict[str, HostFacts] = {}
    issues: list[ConfigIssue] = []
    for f in facts:
        if f.host not in names:
            issues.append(FactsIssue("host", f"is {f.host!r}, which is not in gpu-stack:hosts (declared: {', '.join(names) or 'none'}); "
                                             f"pass one facts file per host of this stack", f.source))
        elif f.host in out:
            issues.append(FactsIssue("host", f"is {f.host!r}, and {out[f.host].source} is for that host too; pass one facts file per host", f.source))
        else:
            out[f.host] = f
    return out, issues


def _bytes(n: int) -> str:
    if n >= GIB and n % GIB == 0:
        return f"{n // GIB} GiB"
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n // MIB} MiB"


def check_host_facts(cfg: StackConfig, facts: dict[str, HostFacts], hostdevs: dict[str, tuple[str, ...]], placements: dict[str, Placement],
                     libvirt_versions: bool = True) -> list[ConfigIssue]:
    """Config against the recorded host: IOMMU and vfio-pci, physical address bits, NUMA CPUs and memory, real BAR sizes.

    libvirt_versions: check the recorded libvirt and QEMU versions against each VM's domain (libvirt, KubeVirt);
    the Proxmox preflight checks the recorded release itself (hypervisors/proxmox/preflight.py)."""
    issues: list[ConfigIssue] = []
    for hi, host in enumerate(cfg.hosts):
        f = facts.get(host.name)
        vms = [(vi, vm) for vi, vm in enumerate(cfg.vms) if vm.host == host.name]
        if f is None or not vms:
            continue
        with_devices = any(vm.gpus or vm.nvswitches for _, vm in vms)
        if with_devices and not f.iommu_enabled:
            issues.append(ConfigIssue(f"hosts[{hi}]", f"host facts {f.source}: the IOMMU of {host.name} is off ({f.iommu_groups} IOMMU groups, kernel "
                                                      f"arguments: {' '.join(f.iommu_cmdline) or 'none'}); "
                                                      "add intel_iommu=on iommu=pt (or amd_iommu=on) to the kernel command line and reboot"))
        if with_devices and not f.vfio_pci_available:
            issues.append(ConfigIssue(f"hosts[{hi}]", f"host facts {f.source}: vfio-pci is not available on {host.name} (no module, not built in); install the kernel's vfio-pci module"))
        if f.phys_addr_bits != host.phys_addr_bits:
            issues.append(ConfigIssue(f"hosts[{hi}].physAddrBits", f"is {host.phys_addr_bits}, but host facts {f.source} record {f.phys_addr_bits} "
                                                                   f"physical address bits (/proc/cpuinfo); set physAddrBits: {f.phys_addr_bits}"))
        for ni, node in enumerate(host.numa_nodes):
            real = f.numa_node(node.id)
            if real is None:
                issues.append(ConfigIssue(f"hosts[{hi}].numaNodes[{ni}].id", f"host facts {f.source} show no NUMA node {node.id} on {host.name}; it has {[n.id for n in f.numa_nodes]}"))
            elif real.cpus != node.cpu_ids:
                issues.append(ConfigIssue(f"hosts[{hi}].numaNodes[{ni}].cpus", f"is {node.cpus}, but host facts {f.source} record node {node.id}'s cpulist as {format_cpu_list(real.cpus)}"))
        bound: dict[int, int] = {}
        for _, vm in vms:
            for c in placements[vm.name].cells if vm.name in placements else ():
                bound[c.host_node] = bound.get(c.host_node, 0) + c.memory_mib
        for node_id, mib in sorted(bound.items()):
            real = f.numa_node(node_id)
            if real is not None and mib * 1024 > real.memory_kib:
                ni = next(i for i, n in enumerate(host.numa_nodes) if n.id == node_id)
                issues.append(ConfigIssue(f"hosts[{hi}].numaNodes[{ni}].memoryGib", f"VMs bind {mib // 1024} GiB to node {node_id}, but host facts "
                                                                                    f"{f.source} record {real.memory_kib // (1024 * 1024)} GiB MemTotal "
                                                                                    "there; lower the VMs' memoryGib"))
        issues += hugepage_issues(hi, host, vms, placements, f)
        for vi, vm in vms:
            if vm.name not in hostdevs:
                continue
            real = sum(f.devices[a].bar64_bytes for a in hostdevs[vm.name] if a in f.devices)
            needed, hole = hole64_gib_for(real), hole64_gib(vm)
            if needed > hole:
                key = f"vms[{vi}].mmioHole64Gib" if vm.mmio_hole64_gib is not None else f"vms[{vi}].gpus"
                big = max((a for a in hostdevs[vm.name] if a in f.devices), key=lambda a: f.devices[a].bar64_bytes)
                issues.append(ConfigIssue(key, f"the {hole} GiB 64-bit PCI hole cannot hold the real BARs: host facts {f.source} record {_bytes(real)} of 64-bit BARs for this VM's devices "
                                               f"({big} alone has {_bytes(f.devices[big].bar64_bytes)}), which needs {needed} GiB; set the GPUs' bar1Gib to the real BAR1 size"
                                               + (" or raise mmioHole64Gib" if vm.mmio_hole64_gib is not None else "")))
        if libvirt_versions:
            issues += _version_issues(hi, host, vms, f)
        issues += _sibling_issues(hi, host, f)
    return issues


def _version_issues(hi: int, host, vms, f: HostFacts) -> list[ConfigIssue]:
    """The recorded libvirt and QEMU versions against what each VM's domain uses (render/hypervisor.py), and against the declared ones."""
    issues = []
    if f.libvirt_version is None or f.qemu_version is None:
        return [ConfigIssue(f"hosts[{hi}]", f"host facts {f.source} record no libvirt and QEMU versions (written on a Proxmox VE node by "
                                            f"hypervisors/proxmox/host-facts.sh); collect {host.name}'s facts with scripts/host-facts.sh")]
    real = {"libvirtVersion": f.libvirt_version, "qemuVersion": f.qemu_version}
    recorded = {key: ".".join(map(str, v)) for key, v in real.items()}
    declared = {"libvirtVersion": host.libvirt_version, "qemuVersion": host.qemu_version}
    for key, value in declared.items():
        if value is not None and version_key(value) != version_key(real[key]):
            issues.append(ConfigIssue(f"hosts[{hi}].{key}", f"is {value}, but host facts {f.source} record {recorded[key]}; set {key}: {recorded[key]} or drop it (the facts are checked)"))
    for vi, vm in vms:
        for key, problem in version_problems(domain_elements(vm, host), recorded["libvirtVersion"], recorded["qemuVersion"]):
            issues.append(ConfigIssue(f"vms[{vi}]", f"host facts {f.source}: {host.name} runs {key[:-7]} {recorded[key]}; {problem}; upgrade the hypervisor or drop the element's option"))
    return issues


def _sibling_issues(hi: int, host, f: HostFacts) -> list[ConfigIssue]:
    """hosts[].threadSiblings, when declared, must be the recorded SMT sibling pairs (thread_siblings_list)."""
    if not host.thread_siblings or not f.smt_siblings:
        return []
    declared = {tuple(parse_cpu_list(s)) for s in host.thread_siblings}
    real = {tuple(s) for s in f.smt_siblings if len(s) > 1}
    wrong = sorted(declared - real)
    if not wrong:
        return []
    return [ConfigIssue(f"hosts[{hi}].threadSiblings", f"pairs {', '.join(format_cpu_list(w) for w in wrong[:4])}{' ...' if len(wrong) > 4 else ''} are not SMT siblings in host facts {f.source}; "
                                                      f"copy the pairs from the facts (smt), e.g. {', '.join(format_cpu_list(r) for r in sorted(real)[:2])}")]


def hugepage_issues(hi: int, host, vms, placements, f: HostFacts) -> list[ConfigIssue]:
    """The 1 GiB hugepages the VMs with numa.hugepages1g take from each node, against the node's pool
    (nodeN/hugepages/hugepages-1048576kB/nr_hugepages) the facts record. QEMU allocates a strict-bound
    cell's pages on its node only (numatune memnode mode strict), so another node's pages do not help:
    the VM does not start.

    The pool, not the free count: facts taken while this stack's VMs run count their pages as used, so
    a check against free_hugepages would refuse the re-plan of every deployed stack (and the pages of a
    VM being replaced come back when it stops). Free pages are recorded for the operator to read, not
    checked. What the pool cannot show is a consumer outside this stack (another VM, DPDK) holding pages
    of the same pool: that VM then fails to start with libvirt's own error (docs/SOURCES.md)."""
    from render.numa import node_takes

    issues = []
    takes = node_takes(vms, placements, lambda vm: vm.numa.hugepages_1g)
    for node_id, by_vm in sorted(takes.items()):
        real = f.numa_node(node_id)
        if real is None or real.hugepages_1g is None:
            continue
        need = sum(gib for _, gib in by_vm)
        if need > real.hugepages_1g:
            ni = next(i for i, n in enumerate(host.numa_nodes) if n.id == node_id)
            each = ", ".join(f"{name} {gib} GiB" for name, gib in by_vm)
            issues.append(ConfigIssue(f"hosts[{hi}].numaNodes[{ni}]", f"host {host.name} NUMA node {node_id}: VMs with numa.hugepages1g take {need} 1 GiB hugepages there ({each}), "
                                                                   f"host facts {f.source} record a pool of {real.hugepages_1g} (hugepages-1048576kB/nr_hugepages), "
                                                                   f"{need - real.hugepages_1g} short: reserve more on that node (hugepagesz=1G "
                                                                   "hugepages=... or nodeN/.../nr_hugepages) or lower the VMs' memoryGib"))
    return issues
