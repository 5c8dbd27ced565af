"""The Proxmox VE backend: Proxmox VE nodes through their API (pulumi-proxmoxve 8.3.0, bpg v0.111.1).

Its row of hypervisors/base.py HYPERVISORS. At preview: one provider per host (root@pam's password or an
API token, SSH for the snippets) and the release and PCI look-ups (preflight.py); under GpuPassthroughVm
two snippets and a VmLegacy (machine.py, render.py).
"""

from __future__ import annotations

from typing import Any

import pulumi

from config.models import Host, StackConfig
from hypervisors.proxmox import checks, machine, plan_files, preflight, rollout
from hypervisors.proxmox import mock as proxmox_mock
from hypervisors.shared import Machine
from render.identity import derived_mac


class Preview:
    """One program run's Proxmox hosts: their providers, then what the preflight resolved per VM."""

    def __init__(self, cfg: StackConfig, hosts: list[Host], secrets: dict):
        self.cfg = cfg
        self.providers = {h.name: preflight.proxmox_provider(h, secrets) for h in hosts}
        self.result = preflight.Preflight({}, {})

    def preflight(self, facts: dict, placements: dict) -> None:
        self.result = preflight.proxmox_preflight(self.cfg, self.providers, facts, placements)

    def declare(self) -> None:
        pass

    def place(self, vm) -> tuple[machine.ProxmoxTarget, pulumi.ProviderResource]:
        return machine.ProxmoxTarget(self.result.hostdevs[vm.name]), self.providers[vm.host]

    def exports(self, vm_name: str) -> dict[str, Any]:
        """vms.<vm>.iommuGroups: the groups the preflight read, which `gpu-stack doctor` compares with the host."""
        return {"iommuGroups": self.result.groups[vm_name]} if vm_name in self.result.groups else {}


class Proxmox:
    kind = "proxmox"
    vm_resource_type = "proxmoxve:index/vmLegacy:VmLegacy"
    provider_tokens = ("proxmoxve:",)
    replacement = staticmethod(rollout.replacement)
    host_issues = staticmethod(checks.host_issues)
    vm_issues = staticmethod(checks.vm_issues)
    stack_issues = staticmethod(checks.stack_issues)
    limits_address_bits = True
    """QEMU's limit: cpu type host passes the host's physical address bits through (host-phys-bits)."""
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
        """The neutral derived MAC (52:54:00:xx:xx:xx); Proxmox accepts any unicast MAC on a virtio NIC."""
        return derived_mac(stack, vm_name)

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
    plan_summary = staticmethod(plan_files.plan_summary)  # before plan_files: that line rebinds the module's name in this class
    plan_files = staticmethod(plan_files.plan_files)
    mock = staticmethod(proxmox_mock.Mock)


BACKEND = Proxmox()
