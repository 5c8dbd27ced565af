"""GpuPassthroughVm: one GPU VM with its GPUs and NVSwitches passed through.

One component, one backend per `hosts[].kind`, chosen through hypervisors/base.py
HYPERVISORS: the host key here, then the backend's resources under it (libvirt: a
Domain, its root Volume and cloud-init disk; vSphere: a VirtualMachine; KubeVirt: a
VirtualMachine and its Secret, ConfigMap and Service on the host cluster). Wiring
only: every derived value is in the backend-neutral VmPlan (render/vm_plan.py); each
backend maps it onto its provider in its folder, hypervisors/<kind>/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_tls as tls

from config.models import Host, Vm
from hypervisors.base import HYPERVISORS
from render.vm_plan import VmPlan


@dataclass(frozen=True)
class GpuPassthroughVmArgs:
    vm: Vm
    host: Host
    plan: VmPlan
    provider: pulumi.ProviderResource
    production: bool
    target: Any
    """What the backend's preview resolved for this VM (hypervisors/<kind>/machine.py: LibvirtTarget, VsphereTarget, KubevirtTarget)."""
    hypervisor_key: pulumi.Input[str] | None = None
    """The libvirt provider's SSH key (secret), for the autostart command on a qemu+ssh hypervisor."""


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
        machine = HYPERVISORS[args.host.kind].create(self, name, args, user_data)
        self.ip = machine.ip
        self.ssh_port: pulumi.Output[int] | None = machine.ssh_port
        self.domain_id = machine.id
        self.mac = pulumi.Output.from_input(plan.mac)
        self.host_public_key = host_key.public_key_openssh.apply(lambda k: k.strip())
        self.register_outputs({
            "domainId": self.domain_id,
            "mac": self.mac,
            "ip": self.ip,
            "devices": list(machine.devices),
            **machine.outputs,
            "hostPublicKey": self.host_public_key,
        })
