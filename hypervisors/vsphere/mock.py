"""vSphere under the mock harness (tools/mockrun.py): a vCenter's answers to the data sources, and a VM's address."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from hypervisors.shared import fake_ip
from hypervisors.vsphere.render import NVIDIA_VENDOR_ID

PROJECT = "gpu-stack"
VIRTUAL_MACHINE = "vsphere:index/virtualMachine:VirtualMachine"

# ESXi names PCI devices as the PCI ID database does (`lspci` on the host).
VSPHERE_DEVICE_NAMES = {
    "P100-PCIE-16GB": "GP100GL [Tesla P100 PCIe 16GB]",
    "V100-PCIE-16GB": "GV100GL [Tesla V100 PCIe 16GB]",
    "A100-PCIE-80GB": "GA100 [A100 PCIe 80GB]",
    "A100-SXM4-80GB": "GA100 [A100 SXM4 80GB]",
    "H100-SXM5-80GB": "GH100 [H100 SXM5 80GB]",
    "H100-PCIE-80GB": "GH100 [H100 PCIe]",
    "L40S": "AD102GL [L40S]",
    "NVSwitch-Gen3": "GH100 [H100 NVSwitch]",
}


def vsphere_pci_device(address: str, model: str) -> dict:
    """One HostPciDevice as getHostPciDevice sees it: id is the host's PCI address."""
    bridge = model.startswith("NVSwitch")
    return {"id": address, "deviceName": VSPHERE_DEVICE_NAMES.get(model, f"NVIDIA {model.replace('-', ' ')}"),
            "vendorId": int(NVIDIA_VENDOR_ID, 16), "classId": 0x0680 if bridge else 0x0302}


def offline_vsphere_pci(config: dict[str, str]) -> dict[str, list[dict]]:
    """What the offline plan assumes: every device the config gives a vSphere host is on it, as configured.

    Keyed by the ESXi host's inventory name (hosts[].vsphere.host), as getHost is asked.
    """
    hosts = json.loads(config.get(f"{PROJECT}:hosts", "[]"))
    vms = json.loads(config.get(f"{PROJECT}:vms", "[]"))
    esxi = {h["name"]: (h.get("vsphere") or {}).get("host") for h in hosts if h.get("kind") == "vsphere"}
    out: dict[str, list[dict]] = {name: [] for name in esxi.values()}
    for vm in vms:
        if vm.get("host") not in esxi:
            continue
        for dev in (*vm.get("gpus", []), *vm.get("nvswitches", [])):
            out[esxi[vm["host"]]].append(vsphere_pci_device(dev["address"].lower(), dev.get("model", "NVSwitch-Gen3")))
    return out


def _moid(kind: str, name: str) -> str:
    return f"{kind}-{1000 + int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 9000}"


def _uuid(name: str) -> str:
    h = hashlib.sha256(name.encode()).hexdigest()
    return f"42{h[:6]}-{h[6:10]}-{h[10:14]}-{h[14:18]}-{h[18:30]}"


class VsphereInventory:
    """Answers the vSphere data sources gpu-stack calls as a vCenter (or, for ha-datacenter, a standalone ESXi host) would."""

    def __init__(self, pci: dict[str, list[dict]], missing: set[str] | None = None):
        self.pci = pci
        self.missing = missing or set()
        """Inventory names the fake vCenter does not have (tests of the "not found" path)."""
        self.host_names: dict[str, str] = {}

    def call(self, token: str, a: dict) -> dict | tuple[dict, list[tuple[str, str]]]:
        kind = token.split(":")[-1]
        name = a.get("name")
        if name in self.missing:  # as the provider reports it: an invoke failure
            return {}, [("name", f"error fetching {kind.removeprefix('get').lower()}: {name} not found")]
        standalone = a.get("datacenterId") == "ha-datacenter"
        if kind == "getDatacenter":
            return {"id": "ha-datacenter" if name == "ha-datacenter" else _moid("datacenter", name), "name": name, "virtualMachines": []}
        if kind == "getHost":
            host_id = "ha-host" if standalone else _moid("host", name)
            self.host_names[host_id] = name
            return {"id": host_id, "name": name, "datacenterId": a.get("datacenterId"),
                    "resourcePoolId": "ha-root-pool" if standalone else _moid("resgroup", f"host/{name}")}
        if kind == "getComputeCluster":
            return {"id": _moid("domain-c", name), "name": name, "datacenterId": a.get("datacenterId"), "resourcePoolId": _moid("resgroup", f"cluster/{name}")}
        if kind == "getDatastore":
            h = hashlib.sha256(f"datastore/{name}".encode()).hexdigest()
            return {"id": f"{h[:8]}-{h[8:16]}-{h[16:20]}-{h[20:32]}" if standalone else _moid("datastore", name), "name": name, "datacenterId": a.get("datacenterId"), "stats": {}}
        if kind == "getNetwork":
            return {"id": f"HaNetwork-{name}" if standalone else _moid("network", name), "name": name, "type": "Network", "datacenterId": a.get("datacenterId")}
        if kind == "getVirtualMachine":
            return {"id": _uuid(f"vm/{name}"), "name": name, "guestId": "rhel9_64Guest", "scsiType": "pvscsi", "firmware": "efi",
                    "disks": [{"label": "Hard disk 1", "size": 20, "thinProvisioned": True, "eagerlyScrub": False, "unitNumber": 0}],
                    "networkInterfaceTypes": ["vmxnet3"], "datacenterId": a.get("datacenterId")}
        if kind == "getOvfVmTemplate":
            return {"id": name, "name": name, "guestId": "rhel9_64Guest", "scsiType": "pvscsi", "firmware": "efi", "numCpus": 2, "memory": 2048,
                    "hostSystemId": a.get("hostSystemId"), "resourcePoolId": a.get("resourcePoolId"), "datastoreId": a.get("datastoreId"),
                    "remoteOvfUrl": a.get("remoteOvfUrl"), "ovfNetworkMap": a.get("ovfNetworkMap") or {}, "diskProvisioning": "thin"}
        if kind == "getHostPciDevice":
            return self._pci_device(a)
        raise Exception(f"mockrun: no answer for {token}")

    def _pci_device(self, a: dict) -> dict:
        """terraform-provider-vsphere's data source: name regex, then class and vendor; the first match, or no id."""
        host = self.host_names.get(a.get("hostId"), a.get("hostId"))
        regex = re.compile(a.get("nameRegex") or "")
        for dev in sorted(self.pci.get(host, []), key=lambda d: d["id"]):
            if not regex.search(dev["deviceName"]):
                continue
            if a.get("classId") and dev["classId"] != int(a["classId"], 16):
                continue
            if a.get("vendorId") and dev["vendorId"] != int(a["vendorId"], 16):
                continue
            return {"id": dev["id"], "hostId": a.get("hostId"), "name": dev["deviceName"], "nameRegex": a.get("nameRegex"),
                    "classId": f"{dev['classId']:x}", "vendorId": f"{dev['vendorId']:x}"}
        return {"id": "", "hostId": a.get("hostId"), "name": "", "nameRegex": a.get("nameRegex")}


class Mock:
    """`vsphere_pci` (ESXi host name -> its PCI devices, vsphere_pci_device rows): what getHostPciDevice finds; None: every
    configured device, as configured (offline_vsphere_pci). `vsphere_missing`: inventory names the fake vCenter lacks."""

    def __init__(self, config: dict[str, str], options: dict[str, Any]):
        pci = options.pop("vsphere_pci", None)
        self.inventory = VsphereInventory(offline_vsphere_pci(config) if pci is None else pci, options.pop("vsphere_missing", None))

    def handles(self, token: str) -> bool:
        return token.startswith("vsphere:index/")

    def invoke(self, token: str, args: dict) -> dict | tuple[dict, list[tuple[str, str]]]:
        return self.inventory.call(token, args)

    def outputs(self, typ: str, name: str, state: dict) -> None:
        if typ == VIRTUAL_MACHINE:
            state.update(defaultIpAddress=fake_ip(name), moid=_moid("vm", name), uuid=_uuid(name))
