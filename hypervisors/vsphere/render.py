"""The vSphere mapping of a VmPlan: inputs of pulumi_vsphere.VirtualMachine.

Pure: no Pulumi. The neutral derivations (MMIO size, placement, MAC, cloud-init,
devices, firmware) come from render/vm_plan.py; this module only puts them in
terraform-provider-vsphere's `vsphere_virtual_machine` fields (pulumi-vsphere
4.18.2; docs/ARCHITECTURE.md cites each one). What seed 001 clicked in the
ESXi UI is here:

- firmware "efi", efi_secure_boot_enabled false ("the boot mode must be EFI");
- pci_device_ids: the host's PCI device ids (its addresses) as resolved by
  getHostPciDevice at preview (stacks/compose.py);
- memory fully reserved (memory_reservation = memory, locked to max): a VM
  with a passthrough device does not power on otherwise;
- extra_config: pciPassthru.use64bitMMIO and pciPassthru.64bitMMIOSizeGB
  ("must add, or the VM fails to power on"; VMware's "How to Enable Nvidia
  V100 GPU in Passthrough mode on vSphere", blogs.vmware.com/apps, 2018), hypervisor.cpuid.v0 only when
  the hypervisor is hidden, and cloud-init through guestinfo (base64);
- a static MAC in VMware's range (use_static_mac).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from render.vm_plan import VmPlan
from render.numa import guest_topology
from config.models import Vm
from config.vsphere import VmVsphere, VsphereHost

NVIDIA_VENDOR_ID = "10de"
"""getHostPciDevice's vendor_id filter (hex, as the data source parses it)."""

EXTRA_CONFIG_REASONS: dict[str, str] = {
    "pciPassthru.use64bitMMIO": "map the GPUs' 64-bit BARs above 4 GiB; without it a VM with more than 16 GB of BARs fails to power on, Module 'DevicePowerOn' power on failed (seed 001)",
    "pciPassthru.64bitMMIOSizeGB": "size of that 64-bit MMIO window, derived from the devices' BARs by render/mmio.py (the libvirt pci-hole64-size); must exceed the GPUs' BAR1 total",
    "hypervisor.cpuid.v0": "hide the hypervisor CPUID bit from the guest; consumer GPUs' drivers refuse to start in a VM (vms[].kvmHidden, default from the catalog)",
    "guestinfo.metadata": "cloud-init meta-data (instance-id, hostname) for the VMware datasource, base64",
    "guestinfo.metadata.encoding": "tells cloud-init that guestinfo.metadata is base64",
    "guestinfo.userdata": "cloud-init user-data: SSH user and key, and the SSH host key that every later connection pins; secret",
    "guestinfo.userdata.encoding": "tells cloud-init that guestinfo.userdata is base64",
}
"""Every extra_config key gpu-stack sets, with why; the plan writes them into vsphere.json."""

SECRET_EXTRA_CONFIG = ("guestinfo.userdata",)
"""Keys whose value is secret (the user-data holds the SSH host's private key)."""


@dataclass(frozen=True)
class TemplateInfo:
    """What the template's data source says (getVirtualMachine, or getOvfVmTemplate for an OVF)."""

    guest_id: str
    scsi_type: str | None = None
    uuid: str | None = None
    """Clone source (getVirtualMachine's id is the template's UUID)."""
    disk_gib: int = 0
    thin_provisioned: bool | None = None
    eagerly_scrub: bool | None = None


@dataclass(frozen=True)
class Inventory:
    """Managed object ids resolved at preview for one vSphere host."""

    datacenter_id: str
    host_id: str
    resource_pool_id: str
    datastore_id: str
    network_id: str


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def num_cores_per_socket(plan: VmPlan, vm: Vm) -> int | None:
    """Asked for explicitly, or one socket per guest NUMA cell when vms[].numa places the VM."""
    opts = vm.vsphere or VmVsphere()
    if opts.num_cores_per_socket is not None:
        return opts.num_cores_per_socket
    if (vm.numa.host_nodes or vm.numa.cells) and plan.placement.cells:
        sockets, _, _ = guest_topology(plan.placement)  # libvirt's <topology> rule: no socket spans two cells
        return plan.vcpus // sockets
    return None


def extra_config(plan: VmPlan, user_data_b64: Any) -> dict[str, Any]:
    """The VM's extra_config; `user_data_b64` is passed through (a secret Output in the program)."""
    out: dict[str, Any] = {}
    if plan.mmio64_gib:
        out["pciPassthru.use64bitMMIO"] = "TRUE"
        out["pciPassthru.64bitMMIOSizeGB"] = str(plan.mmio64_gib)
    if plan.hide_hypervisor:
        out["hypervisor.cpuid.v0"] = "FALSE"
    out["guestinfo.metadata"] = b64(plan.meta_data)
    out["guestinfo.metadata.encoding"] = "base64"
    out["guestinfo.userdata"] = user_data_b64
    out["guestinfo.userdata.encoding"] = "base64"
    assert set(out) <= set(EXTRA_CONFIG_REASONS), set(out) - set(EXTRA_CONFIG_REASONS)
    return out


def virtual_machine_inputs(plan: VmPlan, vm: Vm, target: VsphereHost, inv: Inventory, template: TemplateInfo,
                           pci_device_ids: tuple[str, ...], user_data_b64: Any) -> dict[str, Any]:
    """Keyword arguments of pulumi_vsphere.VirtualMachine (nested blocks as plain dicts, snake_case)."""
    opts = vm.vsphere or VmVsphere()
    args: dict[str, Any] = {
        "name": plan.name,
        "resource_pool_id": inv.resource_pool_id,
        "datastore_id": inv.datastore_id,
        "host_system_id": inv.host_id,
        "num_cpus": plan.vcpus,
        "memory": plan.memory_mib,
        "memory_reservation": plan.memory_mib,
        "memory_reservation_locked_to_max": True,
        "firmware": plan.firmware,
        "efi_secure_boot_enabled": plan.secure_boot,
        "guest_id": opts.guest_id or template.guest_id,
        "pci_device_ids": list(pci_device_ids),
        "network_interfaces": [{
            "network_id": inv.network_id,
            "adapter_type": "vmxnet3",
            "use_static_mac": True,
            "mac_address": plan.mac,
        }],
        "extra_config": extra_config(plan, user_data_b64),
    }
    if target.folder:
        args["folder"] = target.folder
    if template.scsi_type:
        args["scsi_type"] = template.scsi_type
    cps = num_cores_per_socket(plan, vm)
    if cps is not None:
        args["num_cores_per_socket"] = cps
    if opts.latency_sensitivity is not None:
        args["latency_sensitivity"] = opts.latency_sensitivity
    if target.template.vm is not None:
        disk: dict[str, Any] = {"label": "disk0", "size": max(plan.disk_gib, template.disk_gib)}
        if template.thin_provisioned is not None:
            disk["thin_provisioned"] = template.thin_provisioned
        if template.eagerly_scrub is not None:
            disk["eagerly_scrub"] = template.eagerly_scrub
        args["disks"] = [disk]
        args["clone"] = {"template_uuid": template.uuid}
    else:
        # The OVF's own disks are deployed as they are (the provider documents no disk
        # blocks for ovf_deploy); the guest preflight refuses a root with less free
        # space than guest.minRootFreeGib (seed 001: at least 50 GB).
        args["datacenter_id"] = inv.datacenter_id
        args["ovf_deploy"] = {
            "remote_ovf_url": target.template.ovf,
            "disk_provisioning": "thin",
            "allow_unverified_ssl_cert": target.allow_unverified_ssl,
            "ovf_network_map": {target.template.ovf_network: inv.network_id},
        }
    if vm.network.address:
        args["wait_for_guest_net_timeout"] = 0  # the address is known; no wait on VMware Tools for it
    return args


def in_vmware_static_range(mac: str) -> bool:
    """vSphere accepts a manual (static) MAC only in 00:50:56:00:00:00-00:50:56:3F:FF:FF."""
    return mac.startswith("00:50:56:") and int(mac[9:11], 16) <= 0x3F


def derived_vmware_mac(stack: str, vm: str) -> str:
    """A MAC in VMware's static range (00:50:56:00:00:00-3f:ff:ff) from stack and VM name.

    Same digest as render/identity.derived_mac; the fourth octet keeps its low six bits. Never
    changes unless the VM is renamed (use_static_mac on the VirtualMachine).
    """
    digest = hashlib.sha256(f"gpu-stack/{stack}/{vm}".encode()).digest()
    return f"00:50:56:{digest[0] & 0x3F:02x}:{digest[1]:02x}:{digest[2]:02x}"


def model_name_regex(model: str) -> str:
    """getHostPciDevice name_regex for a catalog model: the chip/board token of its name.

    ESXi names devices as lspci does, e.g. "GP100GL [Tesla P100 PCIe 16GB]" for
    P100-PCIE-16GB, "GH100 [H100 SXM5 80GB]" for H100-SXM5-80GB.
    """
    if model.startswith("NVSwitch"):
        return "NVSwitch"
    return next(t for t in model.split("-") if any(c.isdigit() for c in t))
