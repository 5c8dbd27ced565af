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

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

from config.models import Vm
from config.errors import ConfigIssue
from config.types import pci_parts

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
    product_id: int = -1
    """PCI device ID (<product id='0x2204'>); -1 where the source does not give it."""


def nodedev_name(address: str) -> str:
    """libvirt's node device name for a PCI address: pci_0000_17_00_0."""
    return "pci_" + address.replace(":", "_").replace(".", "_")


def _addr(m: dict) -> str:
    return f"{int(m['domain'], 16):04x}:{int(m['bus'], 16):02x}:{int(m['slot'], 16):02x}.{int(m['function'], 16):x}"


def _hex(text: str | None, what: str) -> int:
    try:
        return int(text or "", 16)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a hex number") from None


def nodedev_xml_fields(xml: str) -> dict:
    """What the preflight reads from `virsh nodedev-dumpxml` of a PCI device (libvirt's formatnode.html).

    Only the elements present are returned, so that the invoke's capability map
    can fill what an older libvirt leaves out. ValueError when it is not a PCI
    node device.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        raise ValueError(f"not well-formed XML ({e})") from None
    cap = root.find("./capability[@type='pci']")
    if root.tag != "device" or cap is None:
        raise ValueError("not a PCI node device: expected <device> with <capability type='pci'>")
    out: dict = {}
    name = root.findtext("name")
    if name:
        out["name"] = name.strip()
    parts = [cap.findtext(k) for k in ("domain", "bus", "slot", "function")]
    if all(p is not None for p in parts):
        try:
            d, b, s, f = (int(p, 0) for p in parts)
        except ValueError:
            raise ValueError(f"PCI address elements {parts} are not numbers") from None
        out["address"] = f"{d:04x}:{b:02x}:{s:02x}.{f:x}"
    if cap.findtext("class"):
        out["class_code"] = _hex(cap.findtext("class"), "<class>")
    vendor = cap.find("vendor")
    if vendor is not None and vendor.get("id"):
        out["vendor_id"] = _hex(vendor.get("id"), "<vendor id>")
    product = cap.find("product")
    if product is not None:
        out["product"] = (product.text or "").strip()
        if product.get("id"):
            out["product_id"] = _hex(product.get("id"), "<product id>")
    group = cap.find("iommuGroup")
    if group is not None:
        try:
            out["iommu_group"] = int(group.get("number", ""))
        except ValueError:
            raise ValueError(f"<iommuGroup number={group.get('number')!r}> is not a number") from None
        members = []
        for a in group.findall("address"):
            try:
                members.append(_addr({k: a.get(k, "") for k in ("domain", "bus", "slot", "function")}))
            except ValueError:
                raise ValueError(f"<iommuGroup> member address {dict(a.attrib)} is not hex") from None
        out["group_members"] = tuple(sorted(members))
    numa = cap.find("numa")
    if numa is not None and numa.get("node") not in (None, "-1"):
        try:
            out["numa_node"] = int(numa.get("node"))
        except ValueError:
            raise ValueError(f"<numa node={numa.get('node')!r}> is not a number") from None
    return out


def parse_node_device(address: str, capability: dict | None, xml: str | None) -> NodeDevice:
    """One node device, from its nodedev XML and, where the XML lacks an element, the invoke's capability map.

    getNodeDeviceInfo gives both; host facts (facts/host_facts.py) give the XML
    alone and pass no capability. ValueError on XML that is not a PCI node device.
    """
    cap = capability or {}
    x = nodedev_xml_fields(xml) if xml else {}
    group = cap.get("iommu_group") or cap.get("iommuGroup") or {}
    if "iommu_group" in x:
        number, members = x["iommu_group"], x["group_members"]
    else:
        number = int(group.get("number") or -1)
        members = tuple(sorted(_addr(m) for m in group.get("addresses") or []))
    return NodeDevice(
        address=address,
        vendor_id=x["vendor_id"] if "vendor_id" in x else int((cap.get("vendor") or {}).get("id") or "0", 16),
        class_code=x["class_code"] if "class_code" in x else int(cap.get("class_") or cap.get("class") or "0", 16),
        product=x.get("product") or (cap.get("product") or {}).get("name") or "",
        numa_node=x.get("numa_node"),
        iommu_group=number,
        group_members=members,
        product_id=x["product_id"] if "product_id" in x else (_hex((cap.get("product") or {}).get("id"), "product id") if (cap.get("product") or {}).get("id") else -1),
    )


def _same_device(a: str, b: str) -> bool:
    return pci_parts(a)[:3] == pci_parts(b)[:3]


MEMBER_CONFIGURED, MEMBER_COMPANION, MEMBER_BRIDGE, MEMBER_BLOCKS = "configured", "companion", "bridge", "blocks"


def is_harmless_bridge(class_code: int | None) -> bool:
    """A PCI-to-PCI bridge (class 0x0604xx): vfio leaves it on the host (its pcieport driver is allowed).

    Linux drivers/vfio/vfio.c vfio_dev_driver_allowed() (read in a public code
    index, v5.x; the check later moved to the IOMMU core): a group is viable when
    each member is driver-less, bound to vfio, to pci-stub, or has a header type
    other than PCI_HEADER_TYPE_NORMAL (a bridge). Class 0x0604 is the class of
    type-1 headers. An NVSwitch is class 0x0680 ("Bridge: other", lspci shows
    `Bridge [0680]`) with a normal header: vfio-pci binds it and it is passed
    through like a GPU, so it is not harmless. None (class unknown) is not a bridge.
    """
    return class_code is not None and class_code >> 8 == PCI_BRIDGE_CLASS


def group_member_role(member: str, device: str, configured: Collection[str], class_code: int | None,
                      assigned_elsewhere: Mapping[str, str]) -> str:
    """The one rule for a member of a configured device's IOMMU group (preflight and doctor both use it).

    configured: the member is one of this VM's devices; bridge: a PCI bridge,
    left on the host; companion: another function of `device` (a GPU's audio),
    passed through too; blocks: anything else, the group cannot be given whole.
    """
    if member in configured:
        return MEMBER_CONFIGURED
    if is_harmless_bridge(class_code):
        return MEMBER_BRIDGE
    if _same_device(member, device) and member not in assigned_elsewhere:
        return MEMBER_COMPANION
    return MEMBER_BLOCKS


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
            issues.append(ConfigIssue(f"{key}.address", f"host device {address} is vendor 0x{info.vendor_id:04x} ({info.product or 'unknown'}), not "
                                                        "NVIDIA; check the address with `lspci -D -d 10de:`"))
            continue
        if dev.numa_node is not None and info.numa_node is not None and dev.numa_node != info.numa_node:
            issues.append(ConfigIssue(f"{key}.numaNode", f"{address} sits on host NUMA node {info.numa_node}, not {dev.numa_node}; pinning to the wrong node halves host-device bandwidth"))
        for member in info.group_members:
            member_info = devices.get(member)
            role = group_member_role(member, address, configured, member_info.class_code if member_info else None, assigned_elsewhere)
            if role == MEMBER_COMPANION:
                companions.add(member)
            if role != MEMBER_BLOCKS:
                continue
            owner = f", which is assigned to {assigned_elsewhere[member]}" if member in assigned_elsewhere else ""
            product = f" ({member_info.product})" if member_info and member_info.product else ""
            issues.append(ConfigIssue(
                f"{key}.address",
                f"IOMMU group {info.iommu_group} of {address} also holds {member}{product}{owner}; a group is passed through whole. "
                f"Assign {member} to this VM too, or move the card / enable ACS so the group splits (seed 002: 6 GPUs seen, 4 assignable)",
            ))
    return tuple(configured) + tuple(sorted(companions)), issues
