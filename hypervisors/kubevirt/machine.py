"""KubeVirt's resources under GpuPassthroughVm, all on the HOST cluster's provider (gpu-stack:kubevirtKubeconfig)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from hypervisors.kubevirt import render as kv_render
from hypervisors.shared import Machine


@dataclass(frozen=True)
class KubevirtTarget:
    """A VM on a KubeVirt host: everything goes through the HOST cluster's provider (gpu-stack:kubevirtKubeconfig)."""

    after: tuple[pulumi.Resource, ...] = ()
    """The KubeVirt CR patch, when gpu-stack manages it: devices must be permitted before the VM asks for them."""
    ssh_node_port: int | None = None
    """NodePort of this VM's SSH Service (hypervisors/kubevirt/render.ssh_node_port); None for a LoadBalancer."""
    namespace: pulumi.Resource | None = None
    """The Namespace the VM's objects live in, when gpu-stack creates it (hosts[].kubevirt.createNamespace): all of them wait for it."""


def create(parent: pulumi.Resource, name: str, args, target: KubevirtTarget, user_data: pulumi.Output[str]) -> Machine:
    """VirtualMachine, cloud-init Secret, hook ConfigMap and SSH Service, all on the host cluster's provider."""
    vm, host, plan = args.vm, args.host, args.plan
    kv = host.kubevirt
    keep = args.production
    in_ns = [target.namespace] if target.namespace is not None else []
    on_host = pulumi.ResourceOptions(parent=parent, provider=args.provider, depends_on=in_ns)
    secret_meta = kv_render.cloud_init_secret_meta(vm, kv)
    secret = k8s.core.v1.Secret(
        f"{name}-cloudinit",
        metadata=secret_meta,
        type="Opaque",
        string_data={"userdata": pulumi.Output.secret(user_data)},
        opts=on_host,
    )
    deps: list[pulumi.Resource] = [secret, *target.after]
    hook = kv_render.hook_configmap(plan, vm, kv)
    if hook is not None:
        deps.append(k8s.core.v1.ConfigMap(f"{name}-pcihole64", metadata=hook["metadata"], data=hook["data"], opts=on_host))
    doc = kv_render.virtual_machine(plan, vm, host)
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
    svc = kv_render.ssh_service(vm, kv, target.ssh_node_port)
    service = k8s.core.v1.Service(f"{name}-ssh", metadata=svc["metadata"], spec=svc["spec"], opts=on_host)
    if kv.ssh.service_type == "NodePort":
        ip = pulumi.Output.from_input(kv.ssh.address)
        ssh_port = pulumi.Output.from_input(target.ssh_node_port)
    else:
        ip = service.status.apply(
            lambda st: next(iter([i.ip or i.hostname for i in ((st.load_balancer.ingress if st and st.load_balancer else None) or [])]), None)
        )
        ssh_port = pulumi.Output.from_input(22)
    devices = tuple(kv_render.device_resource(d.role, d.model) for d in plan.devices)
    return Machine(machine.id, ip, devices, {"mmio64Gib": plan.mmio64_gib, "namespace": kv.namespace}, ssh_port)
