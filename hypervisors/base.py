"""The hypervisor contract, and the one table that chooses a backend by `hosts[].kind`.

Compose (stacks/compose.py), GpuPassthroughVm (components/gpu_passthrough_vm.py), the config
checks (stacks/checks.py), the convergence check, the mock harness (tools/mockrun.py), `make plan`'s files and summary
and rollout.json (vm_replacements below, for tools/plan.py) ask HYPERVISORS[host.kind]; no other code switches on the kind (tests/test_house.py). A backend
is one folder, hypervisors/<kind>/, whose backend.py holds its row; it imports config/,
render/, facts/ and hypervisors/shared.py, never another backend's folder. How to add one:
docs/ARCHITECTURE.md, "How to add a hypervisor".
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Protocol

import pulumi

from config.errors import ConfigIssue
from config.models import Host, StackConfig, Vm
from hypervisors.kubevirt.backend import BACKEND as KUBEVIRT
from hypervisors.libvirt.backend import BACKEND as LIBVIRT
from hypervisors.proxmox.backend import BACKEND as PROXMOX
from hypervisors.shared import Machine, PlanSummary
from hypervisors.vsphere.backend import BACKEND as VSPHERE


class Preview(Protocol):
    """One program run's hosts of one kind, from `connect` (its providers registered) to the VMs."""

    def preflight(self, facts: dict, placements: dict) -> None:
        """The look-ups at preview (or from the hosts' facts, with no invoke); ConfigError naming the key, before any VM exists."""

    def declare(self) -> None:
        """Resources the kind's VMs share (libvirt: a base image per host)."""

    def place(self, vm: Vm) -> tuple[Any, pulumi.ProviderResource]:
        """(target, provider) for one VM: the target is what `create` needs of the preview (ids, resolved devices)."""

    def exports(self, vm_name: str) -> dict[str, Any]:
        """The kind's own keys in the `vms.<vm>` stack output (libvirt: iommuGroups)."""


class Mock(Protocol):
    """The kind's provider under tools/mockrun.py: its invokes, and its resources' outputs in update mode."""

    def handles(self, token: str) -> bool: ...

    def invoke(self, token: str, args: dict) -> Any: ...

    def outputs(self, typ: str, name: str, state: dict) -> None: ...


class Hypervisor(Protocol):
    kind: str
    """The hosts[].kind it serves (config/models.py Host.kind)."""

    # --- config (stacks/checks.py), before anything is registered
    def host_issues(self, hi: int, host: Host, vms: list[tuple[int, Vm]], secrets: set[str]) -> list[ConfigIssue]:
        """The host's own block (and no other kind's), and what the host needs of the VMs on it."""

    def vm_issues(self, hi: int, host: Host, vi: int, vm: Vm) -> list[ConfigIssue]:
        """One VM on a host of this kind: its kind's block (and no other kind's), what the backend cannot do."""

    def stack_issues(self, cfg: StackConfig, secrets: set[str], by_host: dict[str, list]) -> list[ConfigIssue]:
        """What spans hosts of this kind: credentials, one shared host cluster."""

    def firmware_issues(self, vi: int, vm: Vm) -> list[ConfigIssue] | None:
        """vms[].firmware where the backend decides it itself (libvirt: the host's OVMF); None: the neutral rules."""

    def default_network(self, vm: Vm) -> tuple[ipaddress.IPv4Network, str] | None:
        """(network, what it is) a VM without an address is assumed on, for the pod/service CIDR overlap check."""

    limits_address_bits: bool
    """Guest RAM plus the 64-bit hole must fit the host's physical address bits (QEMU's limit)."""

    # --- identity
    def derived_mac(self, stack: str, vm_name: str) -> str:
        """The MAC rule: a MAC derived from stack and VM name, in the range the backend accepts."""

    # --- preview (stacks/compose.py): connect every kind, then preflight every kind, then declare
    def connect(self, cfg: StackConfig, hosts: list[Host], secrets: dict[str, pulumi.Output[str]]) -> Preview:
        """Register the providers of these hosts (the used hosts of this kind; possibly none)."""

    # --- under GpuPassthroughVm: the neutral VmPlan mapped onto the provider's resources
    def create(self, parent: pulumi.Resource, name: str, args: Any, user_data: pulumi.Output[str]) -> Machine:
        """args: components/gpu_passthrough_vm.py GpuPassthroughVmArgs (vm, host, plan, provider, target, ...)."""

    # --- rollout.json (vm_replacements below, called by tools/plan.py)
    vm_resource_type: str
    """The Pulumi type token of the resource `create` registers as the VM (<vm>-domain or <vm>-vm in resources.json)."""
    provider_tokens: tuple[str, ...]
    """Prefixes of the Pulumi type tokens only this backend registers or invokes; no code outside hypervisors/ spells one
    (tests/test_house.py)."""

    def replacement(self, old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """Why changing the VM resource's inputs from `old` to `new` (two plans' resources.json inputs) restarts or replaces
        the VM ("xml changed (replaced: ForceNew in ...)", "... (may restart the VM; the plan cannot tell)"), with the
        provider's rule and its source; None: it changes in place, the VM keeps running."""

    # --- the convergence check (convergence/analysis.py)
    convergence_rules: tuple[tuple[str, Callable[[Any], list[tuple[str, str, str]]]], ...]
    """(rule name, rule): each rule takes the check's Cluster and returns (object, key, message) rows."""
    present_crds: tuple[str, ...]
    """CRDs a host cluster of this kind has installed as a prerequisite."""

    def declared_namespaces(self, cfg: StackConfig) -> tuple[set[str], dict[str, str]]:
        """(namespaces declared to exist, namespace -> the key that decides whether the plan creates it)."""

    # --- `make plan` (tools/plan.py): the kind's plan files and its part of the summary (hypervisors/<kind>/plan_files.py)
    def plan_files(self, resources: list, outputs: dict[str, Any]) -> dict[str, Any]:
        """Relative path -> text, or a document (secrets as the engine marks them; tools/plan.py writes "[secret]") that
        tools/plan.py writes as JSON (a `.json` path) or YAML (a `.yaml` path), from what the program registered (each with
        type, name, inputs, parent, provider: tools/mockrun.py Registered) and the stack's outputs."""

    def plan_summary(self, resources: list, outputs: dict[str, Any], facts: dict[str, str]) -> PlanSummary:
        """The kind's lines of the summary `make plan` prints: one per VM it created, then its hosts' (facts: host name ->
        the host-facts file the plan was checked against), and what the offline plan assumed."""

    pins: tuple[tuple[str, str], ...]
    """(component, version) the backend itself pins (KubeVirt's release): versions.json's rows for a stack with a host of this kind."""

    # --- the mock harness (tools/mockrun.py)
    def mock(self, config: dict[str, str], options: dict[str, Any]) -> Mock:
        """The kind's fake provider; it pops the run() options it knows (node_devices, vsphere_pci, ...)."""


def vm_replacements(cfg: StackConfig, old_rows: list[dict[str, Any]], new_rows: list[dict[str, Any]]) -> dict[str, str]:
    """VM name -> why its VM resource changes in a way that restarts it, between two plans' resources.json rows.

    Each VM's backend (its host's kind) finds its VM resource (<vm>-domain or <vm>-vm, of its vm_resource_type) in
    both plans and says, by its provider's rule (`replacement`), whether the change restarts or replaces the VM."""
    hosts = {h.name: h for h in cfg.hosts}
    before = {r["name"]: r for r in old_rows}
    after = {r["name"]: r for r in new_rows}
    out: dict[str, str] = {}
    for vm in cfg.vms:
        backend = HYPERVISORS[hosts[vm.host].kind]
        for name in (f"{vm.name}-domain", f"{vm.name}-vm"):
            new, old = after.get(name), before.get(name)
            if new is None or old is None or not new.get("type") == old.get("type") == backend.vm_resource_type:
                continue
            why = backend.replacement(old["inputs"], new["inputs"])
            if why:
                out[vm.name] = f"{backend.vm_resource_type.rsplit(':', 1)[-1]} {name}: {why}"
    return out


HYPERVISORS: dict[str, Hypervisor] = {
    LIBVIRT.kind: LIBVIRT,
    VSPHERE.kind: VSPHERE,
    KUBEVIRT.kind: KUBEVIRT,
    PROXMOX.kind: PROXMOX,
}
"""Every backend, by hosts[].kind; the order is the order of registration at preview. A new backend adds its line here."""
