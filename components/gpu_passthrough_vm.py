"""GpuPassthroughVm: one libvirt domain with its GPUs and NVSwitches passed through.

Wiring only: the stylesheet, NUMA pinning, MMIO size and cloud-init text come
from render/. The domain keeps a fixed name (unset, Pulumi would add a random
suffix) and ignores later cloud-init changes, because the provider's update
path would hot-swap the cdrom back onto the IDE bus that q35 lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt
import pulumi_tls as tls

from render.catalog import GIB, GPU_MODELS
from render.cloud_init import render_meta_data, render_user_data
from render.domain_xslt import AffinityGroup, DomainSpec, render_domain_xslt
from render.mmio import hole64_gib
from render.numa import Placement, affinity_groups, device_cells
from stacks.config import Host, Vm

NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"


@dataclass(frozen=True)
class GpuPassthroughVmArgs:
    vm: Vm
    host: Host
    placement: Placement
    hostdevs: tuple[str, ...]
    """PCI functions to attach, as resolved by the IOMMU preflight."""
    mac: str
    ssh_user: str
    ssh_public_key: str
    base_volume_id: pulumi.Input[str]
    provider: libvirt.Provider
    production: bool


def domain_spec(args: GpuPassthroughVmArgs) -> DomainSpec:
    vm = args.vm
    consumer = any(GPU_MODELS[g.model].consumer for g in vm.gpus)
    affinity: tuple[AffinityGroup, ...] = ()
    if vm.numa.expose_gpu_affinity:
        cells_of, _ = device_cells(0, vm, args.placement)  # problems were already reported, by key, in stacks.checks
        affinity = tuple(AffinityGroup(cell, devices) for cell, devices in affinity_groups(cells_of, args.hostdevs))
    return DomainSpec(
        affinity=affinity,
        hostdevs=args.hostdevs,
        placement=args.placement,
        hole64_gib=hole64_gib(vm),
        maxphysaddr="passthrough",
        hugepages_1g=vm.numa.hugepages_1g,
        kvm_hidden=vm.kvm_hidden if vm.kvm_hidden is not None else consumer,
        housekeeping_cpus=args.host.reserved_cpu_ids,
    )


class GpuPassthroughVm(pulumi.ComponentResource):
    domain_id: pulumi.Output[str]
    mac: pulumi.Output[str]
    ip: pulumi.Output[str | None]
    host_public_key: pulumi.Output[str]

    def __init__(self, name: str, args: GpuPassthroughVmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:GpuPassthroughVm", name, None, opts)
        vm, host = args.vm, args.host
        on_host = pulumi.ResourceOptions(parent=self, provider=args.provider)
        keep = args.production

        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self, protect=keep))
        user_data = pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh).apply(
            lambda keys: render_user_data(
                hostname=vm.name, user=args.ssh_user, ssh_public_key=args.ssh_public_key,
                host_key_private=keys[0], host_key_public=keys[1].strip(),
            )
        )
        cloudinit = libvirt.CloudInitDisk(
            f"{name}-cloudinit",
            name=f"{vm.name}-cloudinit.iso",
            pool=host.storage_pool,
            user_data=pulumi.Output.secret(user_data),
            meta_data=render_meta_data(hostname=vm.name),
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(delete_before_replace=True)),
        )
        root = libvirt.Volume(
            f"{name}-root",
            name=f"{vm.name}-root.qcow2",
            pool=host.storage_pool,
            base_volume_id=args.base_volume_id,
            size=vm.disk_gib * GIB,
            format="qcow2",
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(protect=keep, retain_on_delete=keep, delete_before_replace=True)),
        )
        self.xslt = render_domain_xslt(domain_spec(args))
        domain = libvirt.Domain(
            f"{name}-domain",
            name=vm.name,
            type="kvm",
            arch="x86_64",
            machine="q35",
            memory=vm.memory_gib * 1024,
            vcpu=vm.vcpus,
            cpu=libvirt.DomainCpuArgs(mode="host-passthrough"),
            firmware=host.firmware.code,
            nvram=libvirt.DomainNvramArgs(file=f"{NVRAM_DIR}/{vm.name}_VARS.fd", template=host.firmware.vars_template),
            disks=[libvirt.DomainDiskArgs(volume_id=root.id)],
            cloudinit=cloudinit.id,
            network_interfaces=[
                libvirt.DomainNetworkInterfaceArgs(
                    network_name=vm.network.name, mac=args.mac, wait_for_lease=vm.network.wait_for_lease,
                )
            ],
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_type="serial", target_port="0")],
            graphics=libvirt.DomainGraphicsArgs(type="vnc", listen_type="address"),
            qemu_agent=False,
            autostart=True,
            running=True,
            xml=libvirt.DomainXmlArgs(xslt=self.xslt),
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(
                protect=keep,
                delete_before_replace=True,
                ignore_changes=["cloudinit"],
                custom_timeouts=pulumi.CustomTimeouts(create="30m"),
            )),
        )
        self.domain_id = domain.id
        self.mac = pulumi.Output.from_input(args.mac)
        if vm.network.address:
            self.ip = pulumi.Output.from_input(vm.network.address)
        else:
            self.ip = domain.network_interfaces.apply(
                lambda nics: next(iter(nics[0].addresses or []), None) if nics else None
            )
        self.host_public_key = host_key.public_key_openssh.apply(lambda k: k.strip())
        self.register_outputs({
            "domainId": self.domain_id,
            "mac": self.mac,
            "ip": self.ip,
            "devices": list(args.hostdevs),
            "hole64Gib": hole64_gib(vm),
            "hostPublicKey": self.host_public_key,
        })
