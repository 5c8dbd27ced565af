"""IOMMU group preflight: which host functions a VM must take, and which it cannot.

An IOMMU group is the unit of isolation: vfio hands a VM all of a group or
none of it. Seed 002 saw six GPUs in lspci but only four assignable, because
two groups held two GPUs each. Here every member of a configured device's
group must be (a) configured for this VM, (b) a PCI-to-PCI bridge (never
attached), or (c) another function of a configured device, such as a GPU's
HDMI audio function, which is then attached too. Anything else is an error
that names the group and the device, before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

from stacks.config import Vm
from stacks.errors import ConfigIssue
from stacks.types import pci_parts

NVIDIA_VENDOR = 0x10DE
PCI_BRIDGE_CLASS = 0x0604


@dataclass(frozen=True)
class NodeDevice:
    address: str
    vendor_id: int
    class_code: int
    product: str
    numa_node: int | None
    iommu_group: int
    group_members: tuple[str, ...]


def nodedev_name(address: str) -> str:
    """libvirt's node device name for a PCI address: pci_0000_17_00_0."""
    return "pci_" + address.replace(":", "_").replace(".", "_")


def _addr(m: dict) -> str:
    return f"{int(m['domain'], 16):04x}:{int(m['bus'], 16):02x}:{int(m['slot'], 16):02x}.{int(m['function'], 16):x}"


def parse_node_device(address: str, capability: dict, xml: str | None) -> NodeDevice:
    """From getNodeDeviceInfo's result (capability map and the raw nodedev XML)."""
    group = capability.get("iommu_group") or {}
    numa = None
    if xml:
        node = ElementTree.fromstring(xml).find("./capability/numa")
        if node is not None and node.get("node") not in (None, "-1"):
            numa = int(node.get("node"))
    return NodeDevice(
        address=address,
        vendor_id=int((capability.get("vendor") or {}).get("id") or "0", 16),
        class_code=int(capability.get("class_") or capability.get("class") or "0", 16),
        product=(capability.get("product") or {}).get("name") or "",
        numa_node=numa,
        iommu_group=int(group.get("number") or -1),
        group_members=tuple(sorted(_addr(m) for m in group.get("addresses") or [])),
    )


def _same_device(a: str, b: str) -> bool:
    return pci_parts(a)[:3] == pci_parts(b)[:3]


def resolve_passthrough(vm_index: int, vm: Vm, devices: dict[str, NodeDevice], assigned_elsewhere: dict[str, str]) -> tuple[tuple[str, ...], list[ConfigIssue]]:
    """The ordered hostdev list for this VM, or the reasons it cannot have one."""
    issues: list[ConfigIssue] = []
    configured = {}
    for kind, items in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
        for i, dev in enumerate(items):
            configured[dev.address] = (f"vms[{vm_index}].{kind}[{i}]", dev)
    companions: set[str] = set()
    for address, (key, dev) in configured.items():
        info = devices[address]
        if info.vendor_id != NVIDIA_VENDOR:
            issues.append(ConfigIssue(f"{key}.address", f"host device {address} is vendor 0x{info.vendor_id:04x} ({info.product or 'unknown'}), not NVIDIA; check the address with `lspci -D -d 10de:`"))
            continue
        if dev.numa_node is not None and info.numa_node is not None and dev.numa_node != info.numa_node:
            issues.append(ConfigIssue(f"{key}.numaNode", f"{address} sits on host NUMA node {info.numa_node}, not {dev.numa_node}; pinning to the wrong node halves host-device bandwidth"))
        for member in info.group_members:
            if member in configured:
                continue
            member_info = devices.get(member)
            if member_info is not None and member_info.class_code >> 8 == PCI_BRIDGE_CLASS:
                continue
            if _same_device(member, address) and member not in assigned_elsewhere:
                companions.add(member)
                continue
            owner = f", which is assigned to {assigned_elsewhere[member]}" if member in assigned_elsewhere else ""
            product = f" ({member_info.product})" if member_info and member_info.product else ""
            issues.append(ConfigIssue(
                f"{key}.address",
                f"IOMMU group {info.iommu_group} of {address} also holds {member}{product}{owner}; a group is passed through whole. "
                f"Assign {member} to this VM too, or move the card / enable ACS so the group splits (seed 002: 6 GPUs seen, 4 assignable)",
            ))
    return tuple(configured) + tuple(sorted(companions)), issues
