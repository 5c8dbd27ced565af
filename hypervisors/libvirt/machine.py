"""libvirt's resources under GpuPassthroughVm: the plan mapped onto a Domain, its root Volume and cloud-init disk.

The domain keeps a fixed name (unset, Pulumi would add a random suffix) and ignores later cloud-init
changes, because the provider's update path would hot-swap the cdrom back onto the IDE bus that q35 lacks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_libvirt as libvirt

from config.catalog import GIB
from config.models import Host, Vm
from hypervisors.libvirt import connection
from hypervisors.libvirt.domain_xslt import AffinityGroup, DomainSpec, render_domain_xslt
from hypervisors.shared import Machine
from render.numa import affinity_groups
from render.vm_plan import VmPlan

NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"


@dataclass(frozen=True)
class LibvirtTarget:
    """What the libvirt preview resolved for one VM."""

    base_volume_id: pulumi.Input[str]
    hostdevs: tuple[str, ...]
    """PCI functions to attach, in attach order: the configured devices and the other functions of their IOMMU groups."""


def domain_spec(plan: VmPlan, vm: Vm, host: Host, hostdevs: tuple[str, ...]) -> DomainSpec:
    """The libvirt mapping of the plan; `hostdevs`: the PCI functions the IOMMU preflight resolved (LibvirtTarget)."""
    affinity: tuple[AffinityGroup, ...] = ()
    if vm.numa.expose_gpu_affinity:
        cells_of = {d.address: d.cell for d in plan.devices if d.cell is not None}  # a missing cell was reported, by key, in stacks.checks
        affinity = tuple(AffinityGroup(cell, devices) for cell, devices in affinity_groups(cells_of, hostdevs))
    return DomainSpec(
        affinity=affinity,
        hostdevs=hostdevs,
        placement=plan.placement,
        hole64_gib=plan.mmio64_gib,
        uuid=plan.machine_uuid,
        maxphysaddr="passthrough",
        hugepages_1g=plan.hugepages_1g,
        kvm_hidden=plan.hide_hypervisor,
        housekeeping_cpus=host.reserved_cpu_ids,
    )


def create(parent: pulumi.Resource, name: str, args, target: LibvirtTarget, user_data: pulumi.Output[str]) -> Machine:
    """The cloud-init disk, the root Volume (CoW on the host's base image) and the Domain, then its autostart."""
    vm, host, plan = args.vm, args.host, args.plan
    on_host = pulumi.ResourceOptions(parent=parent, provider=args.provider)
    keep = args.production
    cloudinit = libvirt.CloudInitDisk(
        f"{name}-cloudinit",
        name=f"{vm.name}-cloudinit.iso",
        pool=host.storage_pool,
        user_data=pulumi.Output.secret(user_data),
        meta_data=plan.meta_data,
        opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(delete_before_replace=True)),
    )
    root = libvirt.Volume(
        f"{name}-root",
        name=f"{vm.name}-root.qcow2",
        pool=host.storage_pool,
        base_volume_id=target.base_volume_id,
        size=plan.disk_gib * GIB,
        format="qcow2",
        opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(protect=keep, retain_on_delete=keep, delete_before_replace=True)),
    )
    xslt = render_domain_xslt(domain_spec(plan, vm, host, target.hostdevs))
    domain = libvirt.Domain(
        f"{name}-domain",
        name=vm.name,
        type="kvm",
        arch="x86_64",
        machine="q35",
        memory=plan.memory_mib,
        vcpu=plan.vcpus,
        cpu=libvirt.DomainCpuArgs(mode="host-passthrough"),
        firmware=host.firmware.code,
        nvram=libvirt.DomainNvramArgs(file=f"{NVRAM_DIR}/{vm.name}_VARS.fd", template=host.firmware.vars_template),
        disks=[libvirt.DomainDiskArgs(volume_id=root.id)],
        cloudinit=cloudinit.id,
        network_interfaces=[
            libvirt.DomainNetworkInterfaceArgs(
                network_name=vm.network.name, mac=plan.mac, wait_for_lease=vm.network.wait_for_lease,
            )
        ],
        consoles=[libvirt.DomainConsoleArgs(type="pty", target_type="serial", target_port="0")],
        graphics=libvirt.DomainGraphicsArgs(type="vnc", listen_type="address"),
        qemu_agent=False,
        # off at create, set by <name>-autostart once the domain has started (connection.autostart_command);
        # ignored afterwards, so the provider never turns it off again (domains created before kept theirs)
        autostart=False,
        running=True,
        xml=libvirt.DomainXmlArgs(xslt=xslt),
        opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(
            protect=keep,
            delete_before_replace=True,
            ignore_changes=["cloudinit", "autostart"],
            custom_timeouts=pulumi.CustomTimeouts(create="30m"),
        )),
    )
    _autostart(parent, name, args, domain, xslt)
    if vm.network.address:
        ip = pulumi.Output.from_input(vm.network.address)
    else:
        ip = domain.network_interfaces.apply(
            lambda nics: next(iter(nics[0].addresses or []), None) if nics else None
        )
    return Machine(domain.id, ip, target.hostdevs, {"mmio64Gib": plan.mmio64_gib})


def _autostart(parent: pulumi.Resource, name: str, args, domain: libvirt.Domain, xslt: str) -> None:
    """`virsh autostart` once the Domain has been created, i.e. started; again whenever it is replaced.

    The triggers are the Domain's inputs that make the provider replace it and that config decides (the
    stylesheet, memory, vCPUs, firmware, NVRAM template, name, the root disk's pool, the NIC): a replaced
    domain keeps its derived UUID, so its ID alone would not re-run this."""
    vm, host, plan = args.vm, args.host, args.plan
    uri = host.libvirt_uri
    replaced_by = {"xslt": xslt, "memory": plan.memory_mib, "vcpu": plan.vcpus, "firmware": host.firmware.code,
                   "nvramTemplate": host.firmware.vars_template, "name": vm.name, "pool": host.storage_pool,
                   "network": [vm.network.name, plan.mac, vm.network.wait_for_lease]}
    trigger = hashlib.sha256(json.dumps(replaced_by, sort_keys=True).encode()).hexdigest()
    script = connection.autostart_command(uri, vm.name)
    opts = pulumi.ResourceOptions(parent=parent, depends_on=[domain])
    if connection.is_ssh(uri):
        hostname, user = connection.ssh_login(uri)
        command.remote.Command(
            f"{name}-autostart",
            connection=command.remote.ConnectionArgs(host=hostname, user=user, private_key=args.hypervisor_key, host_key=host.host_key),
            create=script,
            triggers=[trigger],
            opts=opts,
        )
    else:
        command.local.Command(f"{name}-autostart", create=script, triggers=[trigger], opts=opts)
