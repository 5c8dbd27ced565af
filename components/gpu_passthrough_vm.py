"""GpuPassthroughVm: one GPU VM with its GPUs and NVSwitches passed through.

One component, one backend per `hosts[].kind`: libvirt (a Domain, its root
Volume and cloud-init disk) or vsphere (a VirtualMachine). Wiring only: every
derived value is in the backend-neutral VmPlan (render/vm_plan.py); each
backend maps it onto its provider (hypervisors/libvirt/domain_xslt.py, hypervisors/vsphere/render.py).

libvirt: the domain keeps a fixed name (unset, Pulumi would add a random
suffix) and ignores later cloud-init changes, because the provider's update
path would hot-swap the cdrom back onto the IDE bus that q35 lacks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s
import pulumi_libvirt as libvirt
import pulumi_tls as tls
import pulumi_vsphere as vsphere

from hypervisors.libvirt import connection
from config.catalog import GIB
from hypervisors.libvirt.domain_xslt import AffinityGroup, DomainSpec, render_domain_xslt
from render.numa import affinity_groups, device_cells
from hypervisors.kubevirt import render as kubevirt_map
from render.vm_plan import VmPlan
from hypervisors.vsphere.render import Inventory, TemplateInfo, b64, virtual_machine_inputs
from config.models import Host, Vm

NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"


@dataclass(frozen=True)
class LibvirtTarget:
    base_volume_id: pulumi.Input[str]


@dataclass(frozen=True)
class VsphereTarget:
    """What the vSphere preflight resolved for this VM's host (hypervisors/vsphere/preflight.py)."""

    inventory: Inventory
    template: TemplateInfo
    pci_device_ids: tuple[str, ...]


@dataclass(frozen=True)
class KubevirtTarget:
    """A VM on a KubeVirt host: everything goes through the HOST cluster's provider (gpu-stack:kubevirtKubeconfig)."""

    after: tuple[pulumi.Resource, ...] = ()
    """The KubeVirt CR patch, when gpu-stack manages it: devices must be permitted before the VM asks for them."""
    ssh_node_port: int | None = None
    """NodePort of this VM's SSH Service (render/kubevirt.ssh_node_port); None for a LoadBalancer."""
    namespace: pulumi.Resource | None = None
    """The Namespace the VM's objects live in, when gpu-stack creates it (hosts[].kubevirt.createNamespace): all of them wait for it."""


@dataclass(frozen=True)
class GpuPassthroughVmArgs:
    vm: Vm
    host: Host
    plan: VmPlan
    provider: pulumi.ProviderResource
    production: bool
    target: LibvirtTarget | VsphereTarget | KubevirtTarget
    hypervisor_key: pulumi.Input[str] | None = None
    """The libvirt provider's SSH key (secret), for the autostart command on a qemu+ssh hypervisor."""


def domain_spec(plan: VmPlan, vm: Vm, host: Host) -> DomainSpec:
    """The libvirt mapping of the plan."""
    affinity: tuple[AffinityGroup, ...] = ()
    if vm.numa.expose_gpu_affinity:
        cells_of, _ = device_cells(0, vm, plan.placement)  # problems were already reported, by key, in stacks.checks
        affinity = tuple(AffinityGroup(cell, devices) for cell, devices in affinity_groups(cells_of, plan.hostdevs))
    return DomainSpec(
        affinity=affinity,
        hostdevs=plan.hostdevs,
        placement=plan.placement,
        hole64_gib=plan.mmio64_gib,
        uuid=plan.machine_uuid,
        maxphysaddr="passthrough",
        hugepages_1g=plan.hugepages_1g,
        kvm_hidden=plan.hide_hypervisor,
        housekeeping_cpus=host.reserved_cpu_ids,
    )


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


class GpuPassthroughVm(pulumi.ComponentResource):
    domain_id: pulumi.Output[str]
    mac: pulumi.Output[str]
    ip: pulumi.Output[str | None]
    host_public_key: pulumi.Output[str]

    def __init__(self, name: str, args: GpuPassthroughVmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:GpuPassthroughVm", name, None, opts)
        plan = args.plan
        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self, protect=args.production))
        user_data = pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh).apply(
            lambda keys: plan.user_data(keys[0], keys[1].strip())
        )
        self.ssh_port: pulumi.Output[int] | None = None
        if isinstance(args.target, VsphereTarget):
            machine_id, outputs = self._vsphere(name, args, args.target, user_data)
        elif isinstance(args.target, KubevirtTarget):
            machine_id, outputs = self._kubevirt(name, args, args.target, user_data)
        else:
            machine_id, outputs = self._libvirt(name, args, args.target, user_data)
        self.domain_id = machine_id
        self.mac = pulumi.Output.from_input(plan.mac)
        self.host_public_key = host_key.public_key_openssh.apply(lambda k: k.strip())
        self.register_outputs({
            "domainId": self.domain_id,
            "mac": self.mac,
            "ip": self.ip,
            "devices": list(plan.hostdevs),
            **outputs,
            "hostPublicKey": self.host_public_key,
        })

    def _libvirt(self, name: str, args: GpuPassthroughVmArgs, target: LibvirtTarget, user_data: pulumi.Output[str]):
        vm, host, plan = args.vm, args.host, args.plan
        on_host = pulumi.ResourceOptions(parent=self, provider=args.provider)
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
        self.xslt = render_domain_xslt(domain_spec(plan, vm, host))
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
            xml=libvirt.DomainXmlArgs(xslt=self.xslt),
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(
                protect=keep,
                delete_before_replace=True,
                ignore_changes=["cloudinit", "autostart"],
                custom_timeouts=pulumi.CustomTimeouts(create="30m"),
            )),
        )
        self._autostart(name, args, domain)
        if vm.network.address:
            self.ip = pulumi.Output.from_input(vm.network.address)
        else:
            self.ip = domain.network_interfaces.apply(
                lambda nics: next(iter(nics[0].addresses or []), None) if nics else None
            )
        return domain.id, {"hole64Gib": plan.mmio64_gib}

    def _autostart(self, name: str, args: GpuPassthroughVmArgs, domain: libvirt.Domain) -> None:
        """`virsh autostart` once the Domain has been created, i.e. started; again whenever it is replaced.

        The triggers are the Domain's inputs that make the provider replace it and that config decides (the
        stylesheet, memory, vCPUs, firmware, NVRAM template, name, the root disk's pool, the NIC): a replaced
        domain keeps its derived UUID, so its ID alone would not re-run this."""
        vm, host, plan = args.vm, args.host, args.plan
        uri = host.libvirt_uri
        replaced_by = {"xslt": self.xslt, "memory": plan.memory_mib, "vcpu": plan.vcpus, "firmware": host.firmware.code,
                       "nvramTemplate": host.firmware.vars_template, "name": vm.name, "pool": host.storage_pool,
                       "network": [vm.network.name, plan.mac, vm.network.wait_for_lease]}
        trigger = hashlib.sha256(json.dumps(replaced_by, sort_keys=True).encode()).hexdigest()
        script = connection.autostart_command(uri, vm.name)
        opts = pulumi.ResourceOptions(parent=self, depends_on=[domain])
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

    def _vsphere(self, name: str, args: GpuPassthroughVmArgs, target: VsphereTarget, user_data: pulumi.Output[str]):
        vm, plan = args.vm, args.plan
        keep = args.production
        encoded = pulumi.Output.secret(user_data.apply(b64))
        machine = vsphere.VirtualMachine(
            f"{name}-vm",
            virtual_machine_args(plan, vm, args.host, target, encoded, keep),
            opts=pulumi.ResourceOptions(
                parent=self,
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
            self.ip = pulumi.Output.from_input(vm.network.address)
        else:
            self.ip = machine.default_ip_address
        return machine.id, {"mmio64SizeGb": plan.mmio64_gib}

    def _kubevirt(self, name: str, args: GpuPassthroughVmArgs, target: KubevirtTarget, user_data: pulumi.Output[str]):
        """VirtualMachine, cloud-init Secret, hook ConfigMap and SSH Service, all on the host cluster's provider."""
        vm, host, plan = args.vm, args.host, args.plan
        kv = host.kubevirt
        keep = args.production
        in_ns = [target.namespace] if target.namespace is not None else []
        on_host = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=in_ns)
        secret_meta = kubevirt_map.cloud_init_secret_meta(vm, kv)
        secret = k8s.core.v1.Secret(
            f"{name}-cloudinit",
            metadata=secret_meta,
            type="Opaque",
            string_data={"userdata": pulumi.Output.secret(user_data)},
            opts=on_host,
        )
        deps: list[pulumi.Resource] = [secret, *target.after]
        hook = kubevirt_map.hook_configmap(plan, vm, kv)
        if hook is not None:
            deps.append(k8s.core.v1.ConfigMap(f"{name}-pcihole64", metadata=hook["metadata"], data=hook["data"], opts=on_host))
        doc = kubevirt_map.virtual_machine(plan, vm, host)
        machine = k8s.apiextensions.CustomResource(
            f"{name}-vm",
            api_version=doc["apiVersion"],
            kind=doc["kind"],
            metadata=doc["metadata"],
            spec=doc["spec"],
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(
                protect=keep,
                retain_on_delete=keep,  # the DataVolume is the VM's dataVolumeTemplate: kept with it
                depends_on=deps,
                custom_timeouts=pulumi.CustomTimeouts(create="30m"),
            )),
        )
        svc = kubevirt_map.ssh_service(vm, kv, target.ssh_node_port)
        service = k8s.core.v1.Service(f"{name}-ssh", metadata=svc["metadata"], spec=svc["spec"], opts=on_host)
        if kv.ssh.service_type == "NodePort":
            self.ip = pulumi.Output.from_input(kv.ssh.address)
            self.ssh_port = pulumi.Output.from_input(target.ssh_node_port)
        else:
            self.ip = service.status.apply(
                lambda st: next(iter([i.ip or i.hostname for i in ((st.load_balancer.ingress if st and st.load_balancer else None) or [])]), None)
            )
            self.ssh_port = pulumi.Output.from_input(22)
        return machine.id, {"mmio64Gib": plan.mmio64_gib, "namespace": kv.namespace}
