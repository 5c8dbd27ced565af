"""The KubeVirt backend: a node of a Kubernetes cluster running KubeVirt (v1.9.0), reached through that host cluster.

Its row of hypervisors/base.py HYPERVISORS. At preview: the capacity check from host facts,
the host cluster's provider, the KubeVirt CR patch and the VMs' Namespaces (cluster.py);
under GpuPassthroughVm a VirtualMachine, its cloud-init Secret, hook ConfigMap and SSH Service
(machine.py, render.py); the convergence check gets its rule (convergence.py).
"""

from __future__ import annotations

from typing import Any

import pulumi

from config.models import Host, StackConfig
from hypervisors.kubevirt import checks, convergence, machine
from hypervisors.kubevirt import plan_files as kubevirt_plan
from hypervisors.kubevirt import render as kv_render
from hypervisors.kubevirt.cluster import kubevirt_host_cluster
from hypervisors.shared import Machine, may_restart
from render.identity import derived_mac


class Preview:
    """One program run's KubeVirt hosts: the host cluster's provider, what must come before the VMs, their Namespaces."""

    def __init__(self, cfg: StackConfig, hosts: list[Host], secrets: dict):
        self.cfg, self.hosts, self.secrets = cfg, hosts, secrets
        self.provider: pulumi.ProviderResource | None = None
        self.after: tuple[pulumi.Resource, ...] = ()
        self.namespaces: dict[str, pulumi.Resource] = {}

    def preflight(self, facts: dict, placements: dict) -> None:
        self.provider, self.after, self.namespaces = kubevirt_host_cluster(self.cfg, self.secrets, self.hosts, facts)

    def declare(self) -> None:
        pass

    def place(self, vm) -> tuple[machine.KubevirtTarget, pulumi.ProviderResource]:
        host = next(h for h in self.hosts if h.name == vm.host)
        target = machine.KubevirtTarget(after=self.after, ssh_node_port=kv_render.ssh_node_port(self.cfg, vm),
                                        namespace=self.namespaces.get(host.kubevirt.namespace))
        return target, self.provider

    def exports(self, vm_name: str) -> dict[str, Any]:
        return {}


class Mock:
    """Nothing to answer under the mock harness: KubeVirt's objects are plain Kubernetes resources."""

    def __init__(self, config: dict[str, str], options: dict[str, Any]):
        pass

    def handles(self, token: str) -> bool:
        return False

    def invoke(self, token: str, args: dict) -> dict:
        raise AssertionError(token)

    def outputs(self, typ: str, name: str, state: dict) -> None:
        pass


class Kubevirt:
    kind = "kubevirt"
    vm_resource_type = "kubernetes:kubevirt.io/v1:VirtualMachine"
    provider_tokens = ("kubernetes:kubevirt.io/",)
    replacement = staticmethod(may_restart)
    """A VirtualMachine's changed spec applies to its next VMI: KubeVirt live-updates some fields and marks the others
    RestartRequired; which is which was not read at the pinned KubeVirt, so any changed input may restart the VM."""
    host_issues = staticmethod(checks.host_issues)
    vm_issues = staticmethod(checks.vm_issues)
    stack_issues = staticmethod(checks.stack_issues)
    limits_address_bits = False
    convergence_rules = (("kubevirt", convergence.rule_kubevirt),)
    present_crds = convergence.PRESENT_CRDS
    declared_namespaces = staticmethod(convergence.declared_namespaces)

    @staticmethod
    def firmware_issues(vi: int, vm) -> None:
        return None  # vms[].firmware as the neutral rules say

    @staticmethod
    def default_network(vm) -> None:
        return None

    @staticmethod
    def derived_mac(stack: str, vm_name: str) -> str:
        """The pod network's masquerade interface takes any unicast MAC: the same locally administered one as libvirt's."""
        return derived_mac(stack, vm_name)

    @staticmethod
    def connect(cfg: StackConfig, hosts: list[Host], secrets: dict) -> Preview:
        return Preview(cfg, hosts, secrets)

    @staticmethod
    def create(parent: pulumi.Resource, name: str, args, user_data: pulumi.Output[str]) -> Machine:
        return machine.create(parent, name, args, args.target, user_data)

    pins = (("kubevirt", kv_render.KUBEVIRT_VERSION),)
    plan_files = staticmethod(kubevirt_plan.plan_files)
    plan_summary = staticmethod(kubevirt_plan.plan_summary)
    mock = Mock


BACKEND = Kubevirt()
