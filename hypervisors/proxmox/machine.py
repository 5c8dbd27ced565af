"""Proxmox VE's resources under GpuPassthroughVm (pulumi-proxmoxve 8.3.0): two snippets and one VmLegacy.

The cloud-init user-data (it holds the guest's SSH host private key: secret) and meta-data are uploaded as
snippets (FileLegacy, content type snippets: the provider uploads them over SSH, bpg v0.111.1
docs/resources/virtual_environment_file.md "Snippets are not enabled by default ... uses SSH access to the
node"), then the VM names them as its cloud-init user and meta data.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmoxve

from config.models import Host, Vm
from hypervisors.proxmox.render import vm_inputs
from hypervisors.shared import Machine
from render.vm_plan import VmPlan


@dataclass(frozen=True)
class ProxmoxTarget:
    """What the Proxmox preflight resolved for this VM (hypervisors/proxmox/preflight.py)."""

    hostdevs: tuple[str, ...]
    """The host functions to pass through: configured devices and the other functions of their IOMMU groups."""


def vm_legacy_args(plan: VmPlan, vm: Vm, host: Host, target: ProxmoxTarget, user_data_file_id: pulumi.Input[str],
                   meta_data_file_id: pulumi.Input[str], production: bool) -> proxmoxve.VmLegacyArgs:
    """The Proxmox mapping of the plan as the SDK's own input types."""
    kw = vm_inputs(plan, vm, host.proxmox, target.hostdevs, user_data_file_id, meta_data_file_id)
    kw["cpu"] = proxmoxve.VmLegacyCpuArgs(**kw["cpu"])
    kw["numas"] = [proxmoxve.VmLegacyNumaArgs(**n) for n in kw["numas"]]
    kw["memory"] = proxmoxve.VmLegacyMemoryArgs(**kw["memory"])
    kw["smbios"] = proxmoxve.VmLegacySmbiosArgs(**kw["smbios"])
    kw["operating_system"] = proxmoxve.VmLegacyOperatingSystemArgs(**kw["operating_system"])
    kw["disks"] = [proxmoxve.VmLegacyDiskArgs(**d) for d in kw["disks"]]
    kw["network_devices"] = [proxmoxve.VmLegacyNetworkDeviceArgs(**n) for n in kw["network_devices"]]
    init = dict(kw["initialization"])
    init["ip_configs"] = [proxmoxve.VmLegacyInitializationIpConfigArgs(ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(**c["ipv4"])) for c in init["ip_configs"]]
    kw["initialization"] = proxmoxve.VmLegacyInitializationArgs(**init)
    if "efi_disk" in kw:
        kw["efi_disk"] = proxmoxve.VmLegacyEfiDiskArgs(**kw["efi_disk"])
    if "hostpcis" in kw:
        kw["hostpcis"] = [proxmoxve.VmLegacyHostpciArgs(**h) for h in kw["hostpcis"]]
    if "agent" in kw:
        kw["agent"] = proxmoxve.VmLegacyAgentArgs(**kw["agent"])
    kw["protection"] = production
    return proxmoxve.VmLegacyArgs(**kw)


def _snippet(parent: pulumi.Resource, name: str, host: Host, provider, file_name: str, data: pulumi.Input[str], secret: bool) -> proxmoxve.FileLegacy:
    return proxmoxve.FileLegacy(
        name,
        proxmoxve.FileLegacyArgs(
            node_name=host.proxmox.node,
            datastore_id=host.proxmox.snippets_datastore,
            content_type="snippets",
            source_raw=proxmoxve.FileLegacySourceRawArgs(data=data, file_name=file_name),
        ),
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, additional_secret_outputs=["sourceRaw"] if secret else None),
    )


def first_address(addresses: list | None) -> str | None:
    """The guest agent's first non-loopback IPv4 (ipv4_addresses: one list per interface, lo first)."""
    for per_interface in addresses or []:
        for a in per_interface or []:
            if a and not a.startswith("127."):
                return a
    return None


def create(parent: pulumi.Resource, name: str, args, target: ProxmoxTarget, user_data: pulumi.Output[str]) -> Machine:
    vm, plan, host = args.vm, args.plan, args.host
    keep = args.production
    user = _snippet(parent, f"{name}-user-data", host, args.provider, f"{vm.name}-user-data.yaml", pulumi.Output.secret(user_data), True)
    meta = _snippet(parent, f"{name}-meta-data", host, args.provider, f"{vm.name}-meta-data.yaml", plan.meta_data, False)
    machine = proxmoxve.VmLegacy(
        f"{name}-vm",
        vm_legacy_args(plan, vm, host, target, user.id, meta.id, keep),
        opts=pulumi.ResourceOptions(
            parent=parent,
            provider=args.provider,
            protect=keep,
            retain_on_delete=keep,
            custom_timeouts=pulumi.CustomTimeouts(create="30m"),
        ),
    )
    if vm.network.address:
        ip = pulumi.Output.from_input(vm.network.address)
    else:
        ip = machine.ipv4_addresses.apply(first_address)
    return Machine(machine.id, ip, target.hostdevs, {"mmio64Gib": plan.mmio64_gib})
