"""The config of a `kind: vsphere` host (hosts[].vsphere) and of a VM on one (vms[].vsphere).

On the ground floor with the other models: StackConfig and its JSON schema need them. The checks that span
fields are hypervisors/vsphere/checks.py's.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from config.base import Model
from config.types import (
    InventoryFolder,
    InventoryName,
    Name,
    OvfUrl,
    PciAddress,
    VcenterEndpoint,
    VsphereGuestId,
)


class VsphereTemplate(Model):
    """What the VM is created from: exactly one of `vm` and `ovf`."""

    vm: Optional[InventoryName] = None
    """Name of a VM template in the datacenter, cloned; its first disk is grown to vms[].diskGib. Its guest must run cloud-init with the VMware datasource (guestinfo)."""
    ovf: Optional[OvfUrl] = None
    """URL of an OVF or OVA deployed with ovf_deploy. Its guest must run cloud-init with the VMware datasource (guestinfo). Its root disk is deployed at the size the OVA has."""
    ovf_network: InventoryName = "VM Network"
    """Network name in the OVF descriptor, mapped to `network`."""


class VsphereHost(Model):
    endpoint: VcenterEndpoint = Field(json_schema_extra={"pattern": r"^[A-Za-z0-9.:\[\]-]+$"})  # for editors; the type says why
    """vCenter host name or address (the provider's vsphere_server), e.g. vcenter.lab.local. The provider clones and deploys OVFs only through vCenter, not over a direct ESXi connection."""
    allow_unverified_ssl: bool = False
    """Accept a self-signed endpoint certificate."""
    datacenter: InventoryName
    """vCenter datacenter that holds the host. (ha-datacenter, a standalone host's own, is refused: no clone or OVF deploy there.)"""
    cluster: Optional[InventoryName] = None
    """Compute cluster whose resource pool the VM goes in. Unset: the host's own resource pool."""
    host: InventoryName
    """The ESXi host the VM runs on, as named in vCenter's inventory (often its address). Passed-through devices are a host's, so a GPU VM is bound to it."""
    datastore: InventoryName
    """Datastore for the VM's files and root disk."""
    network: InventoryName
    """Port group (network) the VM's NIC attaches to, e.g. VM Network."""
    folder: Optional[InventoryFolder] = None
    """VM folder, relative to the datacenter's vm folder."""
    template: VsphereTemplate
    pci_devices: tuple[PciAddress, ...] = Field(min_length=1)
    """Host PCI devices set to Passthrough Active (Host > Manage > Hardware > PCI Devices, then reboot the host): the only ones a VM on this host may take (docs/OPERATIONS.md)."""


class VmVsphere(Model):
    """vSphere-only settings of a VM on a `kind: vsphere` host."""

    num_cores_per_socket: Optional[int] = Field(default=None, gt=0)
    """Cores per virtual socket. Unset: vcpus divided by the guest NUMA cells when vms[].numa sets hostNodes or cells, else the provider default."""
    latency_sensitivity: Optional[Literal["low", "normal", "medium", "high"]] = None
    """VM latency sensitivity; high needs the memory reservation gpu-stack always sets, and a full CPU reservation set in vSphere."""
    guest_id: Optional[VsphereGuestId] = None
    """vSphere guest OS id. Unset: the template's."""
