"""The backend-neutral plan of one GPU VM: every derived value, computed once.

GpuPassthroughVm has one backend per `hosts[].kind`, each in its folder under
hypervisors/ and chosen through hypervisors/base.py HYPERVISORS. Each backend only
maps this plan onto its provider's fields: libvirt into a DomainSpec and Domain
inputs (hypervisors/libvirt/), vSphere into VirtualMachine inputs
(hypervisors/vsphere/render.py), KubeVirt into a VirtualMachine object
(hypervisors/kubevirt/render.py). A new backend is a new mapping of the same
plan, never a copy of the derivations:

- the 64-bit MMIO window from the devices' BARs (render/mmio.py): libvirt's
  pci-hole64-size, vSphere's pciPassthru.64bitMMIOSizeGB;
- NUMA placement (render/numa.py);
- the MAC, stable forever (render/identity.py), in the backend's MAC range
  (the backend's `mac` rule, handed in);
- the machine UUID, from project, stack and VM name (render/identity.py):
  libvirt's domain <uuid>, so a failed start's leftover is adopted by the next
  create (docs/OPERATIONS.md, "Recovery after a failed start");
- the guest identity: cloud-init user-data with the pinned SSH host key and
  meta-data (render/cloud_init.py);
- the devices to pass through, neutral: (address, model, guest NUMA cell, role);
  each backend resolves its own identifiers from them (libvirt: the PCI
  functions of their IOMMU groups, vSphere: the host's device ids, KubeVirt:
  the resource names its device plugins advertise);
- firmware: EFI, Secure Boot off with GPUs (stacks/checks.py refuses the rest);
- whether to hide the hypervisor from the guest (consumer GPUs, catalog).
"""

from __future__ import annotations

from dataclasses import dataclass

from config.catalog import GPU_MODELS
from render.cloud_init import render_meta_data, render_user_data
from render.identity import derived_machine_uuid
from render.mmio import hole64_gib
from render.numa import Placement, device_cells
from config.models import Vm


@dataclass(frozen=True)
class PlannedDevice:
    """One configured device, as every backend sees it."""

    address: str
    """Host PCI address (vms[].gpus[].address, vms[].nvswitches[].address)."""
    model: str
    """Catalog model (config/catalog.py)."""
    cell: int | None
    """Guest NUMA cell on the device's host node (render/numa.device_cells); None when the VM has no cell there."""
    role: str
    """The config list it comes from: "gpus" or "nvswitches"."""


@dataclass(frozen=True)
class VmPlan:
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    placement: Placement
    devices: tuple[PlannedDevice, ...]
    """The configured devices, GPUs first, in config order; a backend resolves its own identifiers from them."""
    mmio64_gib: int
    """64-bit MMIO window in GiB; 0 when nothing is passed through."""
    mac: str
    machine_uuid: str
    """Derived from project, stack and VM name; the libvirt backend sets it as the domain's <uuid>."""
    firmware: str
    """"efi" (the default; with GPUs the only one accepted, seed 001: "the boot mode must be EFI") or "bios"."""
    secure_boot: bool
    hide_hypervisor: bool
    """libvirt <kvm><hidden state="on"/>, vSphere hypervisor.cpuid.v0 = FALSE."""
    hugepages_1g: bool
    ssh_user: str
    ssh_public_key: str
    meta_data: str

    def user_data(self, host_key_private: str, host_key_public: str) -> str:
        """cloud-init user-data; the host key comes from a Pulumi resource, so this is applied late."""
        return render_user_data(
            hostname=self.name, user=self.ssh_user, ssh_public_key=self.ssh_public_key,
            host_key_private=host_key_private, host_key_public=host_key_public,
        )


def hides_hypervisor(vm: Vm) -> bool:
    """Explicit `vms[].kvmHidden`, else the catalog: consumer GPUs need it, data-centre GPUs do not."""
    if vm.kvm_hidden is not None:
        return vm.kvm_hidden
    return any(GPU_MODELS[g.model].consumer for g in vm.gpus)


def planned_devices(vm: Vm, placement: Placement) -> tuple[PlannedDevice, ...]:
    """The VM's GPUs and NVSwitches with their guest cells (a bad numaNode was already reported, by key, in stacks.checks)."""
    cells, _ = device_cells(0, vm, placement)
    return tuple(PlannedDevice(d.address, d.model, cells.get(d.address), role)
                 for role, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)) for d in devs)


def plan_vm(vm: Vm, *, derived_mac: str, project: str, stack: str, placement: Placement, ssh_user: str, ssh_public_key: str) -> VmPlan:
    """`derived_mac`: the MAC the backend derives for this VM in its range (hypervisors/base.py Hypervisor.derived_mac);
    the configured vms[].network.mac wins over it."""
    return VmPlan(
        name=vm.name,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_gib * 1024,
        disk_gib=vm.disk_gib,
        placement=placement,
        devices=planned_devices(vm, placement),
        mmio64_gib=hole64_gib(vm),
        mac=vm.network.mac or derived_mac,
        machine_uuid=derived_machine_uuid(project, stack, vm.name),
        firmware=vm.firmware.type,
        secure_boot=vm.firmware.secure_boot,
        hide_hypervisor=hides_hypervisor(vm),
        hugepages_1g=vm.numa.hugepages_1g,
        ssh_user=ssh_user,
        ssh_public_key=ssh_public_key,
        meta_data=render_meta_data(hostname=vm.name),
    )
