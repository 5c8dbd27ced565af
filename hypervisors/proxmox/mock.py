"""Proxmox VE under the mock harness (tools/mockrun.py): a node's answers to getVersion and getPci, a VM's address."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypervisors.shared import fake_ip

PROJECT = "gpu-stack"
VM_LEGACY = "proxmoxve:index/vmLegacy:VmLegacy"
GET_VERSION = "proxmoxve:index/getVersion:getVersion"
GET_PCI = "proxmoxve:hardware/getPci:getPci"
RELEASE = "9.1"
"""The release the offline plan assumes a node runs (above every minimum of render.py MIN_PVE)."""


def pci_row(address: str, model: str, group: int, class_code: int | None = None, vendor: int = 0x10DE) -> dict:
    """One getPci device as the provider returns it (GET /nodes/{node}/hardware/pci, hex strings)."""
    bridge = model.startswith("NVSwitch")
    cls = class_code if class_code is not None else (0x068000 if bridge else 0x030200)
    return {"id": address, "class": f"0x{cls:06x}", "vendor": f"0x{vendor:04x}", "vendorName": "NVIDIA Corporation" if vendor == 0x10DE else "",
            "device": "0x22a3" if bridge else "0x2324", "deviceName": model, "subsystemVendor": f"0x{vendor:04x}", "subsystemVendorName": "",
            "subsystemDevice": "0x0000", "subsystemDeviceName": "", "iommuGroup": group, "mdev": False}


def offline_pci(config: dict[str, str]) -> dict[str, list[dict]]:
    """What the offline plan assumes: every device the config gives a Proxmox node is on it, each in its own IOMMU group.

    Keyed by the node name (hosts[].proxmox.node), as getPci is asked."""
    hosts = json.loads(config.get(f"{PROJECT}:hosts", "[]"))
    vms = json.loads(config.get(f"{PROJECT}:vms", "[]"))
    nodes = {h["name"]: (h.get("proxmox") or {}).get("node") for h in hosts if h.get("kind") == "proxmox"}
    out: dict[str, list[dict]] = {node: [] for node in nodes.values()}
    for vm in vms:
        if vm.get("host") not in nodes:
            continue
        rows = out[nodes[vm["host"]]]
        for dev in (*vm.get("gpus", []), *vm.get("nvswitches", [])):
            rows.append(pci_row(dev["address"].lower(), dev.get("model", "NVSwitch-Gen3"), 100 + len(rows)))
    return out


class Mock:
    """`proxmox_pci` (node -> getPci rows, pci_row): what getPci finds; None: every configured device, isolated (offline_pci).
    `proxmox_release`: what getVersion answers."""

    def __init__(self, config: dict[str, str], options: dict[str, Any]):
        pci = options.pop("proxmox_pci", None)
        self.pci = offline_pci(config) if pci is None else pci
        self.release = options.pop("proxmox_release", RELEASE)

    def handles(self, token: str) -> bool:
        return token.startswith("proxmoxve:")

    def invoke(self, token: str, args: dict) -> dict:
        if token == GET_VERSION:
            return {"id": "version", "release": self.release, "version": f"{self.release}.1", "repositoryId": "mock"}
        if token == GET_PCI:
            rows = self.pci.get(args.get("nodeName"), [])
            if args.get("pciClassBlacklists") is None:  # the provider's default blacklist: 05, 06, 0b (pve-manager PCI.pm)
                rows = [r for r in rows if r["class"][2:4] not in ("05", "06", "0b")]
            return {"id": args.get("nodeName"), "nodeName": args.get("nodeName"), "devices": rows, "pciClassBlacklists": args.get("pciClassBlacklists") or []}
        raise Exception(f"mockrun: no answer for {token}")

    def outputs(self, typ: str, name: str, state: dict) -> None:
        if typ == VM_LEGACY:
            state.update(ipv4Addresses=[["127.0.0.1"], [fake_ip(name)]], vmId=100 + int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 900)
