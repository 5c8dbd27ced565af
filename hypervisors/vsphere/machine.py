"""vSphere's resources under GpuPassthroughVm: the plan mapped onto one VirtualMachine (pulumi-vsphere 4.18.2)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_vsphere as vsphere

from config.models import Host, Vm
from hypervisors.shared import Machine
from hypervisors.vsphere.render import Inventory, TemplateInfo, b64, virtual_machine_inputs
from render.vm_plan import VmPlan


@dataclass(frozen=True)
class VsphereTarget:
    """What the vSphere preflight resolved for this VM's host (hypervisors/vsphere/preflight.py)."""

    inventory: Inventory
    template: TemplateInfo
    pci_device_ids: tuple[str, ...]


def virtual_machine_args(plan: VmPlan, vm: Vm, host: Host, target: VsphereTarget, user_data_b64: pulumi.Input[str], production: bool) -> vsphere.VirtualMachineArgs:
    """The vSphere mapping of the plan as the SDK's own input types."""
    kw = virtual_machine_inputs(plan, vm, host.vsphere, target.inventory, target.template, target.pci_device_ids, user_data_b64)
    kw["network_interfaces"] = [vsphere.VirtualMachineNetworkInterfaceArgs(**n) for n in kw["network_interfaces"]]
    if "disks" in kw:
        kw["disks"] = [vsphere.VirtualMachineDiskArgs(**d, keep_on_remove=production) for d in kw["disks"]]
    if "clone" in kw:
        kw["clone"] = vsphere.VirtualMachineCloneArgs(**kw["clone"])
    if "ovf_deploy" in kw:
        kw["ovf_deploy"] = vsphere.VirtualMachineOvfDeployArgs(**kw["ovf_deploy"])
    return vsphere.VirtualMachineArgs(**kw)


def create(parent: pulumi.Resource, name: str, args, target: VsphereTarget, user_data: pulumi.Output[str]) -> Machine:
    """The VirtualMachine, cloud-init through guestinfo (base64, secret)."""
    vm, plan = args.vm, args.plan
    keep = args.production
    encoded = pulumi.Output.secret(user_data.apply(b64))
    machine = vsphere.VirtualMachine(
        f"{name}-vm",
        virtual_machine_args(plan, vm, args.host, target, encoded, keep),
        opts=pulumi.ResourceOptions(
            parent=parent,
            provider=args.provider,
            protect=keep,
            retain_on_delete=keep,
            # every change under clone/ovf_deploy is ForceNew in the provider: a rebuilt
            # template (new UUID) must not replace a running GPU node
            ignore_changes=["clone", "ovfDeploy"],
            custom_timeouts=pulumi.CustomTimeouts(create="30m"),
        ),
    )
    if vm.network.address:
        ip = pulumi.Output.from_input(vm.network.address)
    else:
        ip = machine.default_ip_address
    return Machine(machine.id, ip, target.pci_device_ids, {"mmio64Gib": plan.mmio64_gib})
