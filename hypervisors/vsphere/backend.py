"""The vSphere backend: ESXi hosts through vCenter (pulumi-vsphere 4.18.2).

Its row of hypervisors/base.py HYPERVISORS. At preview: one provider per host
(vsphereUser/vspherePassword) and the inventory and PCI look-ups (preflight.py);
under GpuPassthroughVm a VirtualMachine (machine.py, render.py).
"""

from __future__ import annotations

from typing import Any

import pulumi

from config.models import Host, StackConfig
from hypervisors.shared import Machine, may_restart
from hypervisors.vsphere import checks, machine, preflight
from hypervisors.vsphere import mock as vsphere_mock
from hypervisors.vsphere import plan_files as vsphere_plan
from hypervisors.vsphere.render import derived_vmware_mac


class Preview:
    """One program run's vSphere hosts: their providers, then what the look-ups resolved per VM."""

    def __init__(self, cfg: StackConfig, hosts: list[Host], secrets: dict):
        self.cfg = cfg
        self.providers = {h.name: preflight.vsphere_provider(h, secrets) for h in hosts}
        self.targets: dict[str, machine.VsphereTarget] = {}

    def preflight(self, facts: dict, placements: dict) -> None:
        self.targets = preflight.vsphere_preflight(self.cfg, self.providers)

    def declare(self) -> None:
        pass

    def place(self, vm) -> tuple[machine.VsphereTarget, pulumi.ProviderResource]:
        return self.targets[vm.name], self.providers[vm.host]

    def exports(self, vm_name: str) -> dict[str, Any]:
        return {}


class Vsphere:
    kind = "vsphere"
    vm_resource_type = "vsphere:index/virtualMachine:VirtualMachine"
    provider_tokens = ("vsphere:",)
    replacement = staticmethod(may_restart)
    """Which VirtualMachine changes the provider applies with a power-off was not read at the pinned pulumi-vsphere:
    any changed input may restart the VM (the plan cannot tell)."""
    host_issues = staticmethod(checks.host_issues)
    vm_issues = staticmethod(checks.vm_issues)
    stack_issues = staticmethod(checks.stack_issues)
    limits_address_bits = False
    """ESXi sizes the guest's address space itself."""
    convergence_rules: tuple = ()
    present_crds: tuple[str, ...] = ()

    @staticmethod
    def firmware_issues(vi: int, vm) -> None:
        return None  # vms[].firmware as the neutral rules say

    @staticmethod
    def default_network(vm) -> None:
        return None

    @staticmethod
    def derived_mac(stack: str, vm_name: str) -> str:
        """In VMware's static range: vSphere refuses a manual MAC outside it."""
        return derived_vmware_mac(stack, vm_name)

    @staticmethod
    def connect(cfg: StackConfig, hosts: list[Host], secrets: dict) -> Preview:
        return Preview(cfg, hosts, secrets)

    @staticmethod
    def create(parent: pulumi.Resource, name: str, args, user_data: pulumi.Output[str]) -> Machine:
        return machine.create(parent, name, args, args.target, user_data)

    @staticmethod
    def declared_namespaces(cfg: StackConfig) -> tuple[set[str], dict[str, str]]:
        return set(), {}

    pins: tuple[tuple[str, str], ...] = ()
    plan_files = staticmethod(vsphere_plan.plan_files)
    plan_summary = staticmethod(vsphere_plan.plan_summary)
    mock = staticmethod(vsphere_mock.Mock)


BACKEND = Vsphere()
