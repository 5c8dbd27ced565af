"""libvirt under the mock harness (tools/mockrun.py): getNodeDeviceInfo answers and a Domain's address."""

from __future__ import annotations

from typing import Any

from hypervisors.shared import ProviderInvokeError, fake_ip

NODE_DEVICE_INFO = "libvirt:index/getNodeDeviceInfo:getNodeDeviceInfo"
DOMAIN = "libvirt:index/domain:Domain"


def isolated_node_device(name: str) -> dict:
    """A node device alone in its IOMMU group: what the offline plan assumes."""
    parts = name.removeprefix("pci_").split("_")
    domain, bus, slot, function = parts
    return {
        "name": name,
        "xml": f"<device><name>{name}</name><capability type='pci'><class>0x030200</class></capability></device>",
        "capability": {
            "type": "pci",
            "class": "0x030200",
            "vendor": {"id": "0x10de", "name": "NVIDIA Corporation"},
            "product": {"id": "0x0000", "name": "offline plan: not read from the host"},
            "iommuGroup": {
                "number": str(int(bus, 16)),
                "addresses": [{"domain": f"0x{domain}", "bus": f"0x{bus}", "slot": f"0x{slot}", "function": f"0x{function}"}],
            },
        },
    }


class Mock:
    """`node_devices` (node device name -> getNodeDeviceInfo's answer): the hosts' devices; a name not in it is
    answered as libvirt answers a missing device. None: every device is alone in its IOMMU group (isolated_node_device)."""

    def __init__(self, config: dict[str, str], options: dict[str, Any]):
        self.node_devices: dict[str, dict] | None = options.pop("node_devices", None)

    def handles(self, token: str) -> bool:
        return token == NODE_DEVICE_INFO

    def invoke(self, token: str, args: dict) -> dict:
        name = args["name"]
        if self.node_devices is not None:
            if name not in self.node_devices:
                raise ProviderInvokeError(token, f"failed to lookup node device: Node device not found: no node device with matching name '{name}'")
            return self.node_devices[name]
        return isolated_node_device(name)

    def outputs(self, typ: str, name: str, state: dict) -> None:
        """Update mode: the Domain's NIC gets an address, as DHCP would give it."""
        if typ == DOMAIN:
            state["networkInterfaces"] = [dict(n, addresses=[fake_ip(name)]) for n in state.get("networkInterfaces", [])]
