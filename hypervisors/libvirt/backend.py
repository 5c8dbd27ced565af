"""The libvirt backend: KVM hosts reached over a libvirt URI (pulumi-libvirt 0.5.4).

Its row of hypervisors/base.py HYPERVISORS. At preview: one provider per host (for qemu+ssh
with the pinned host key, hypervisors/libvirt/connection.py), the IOMMU and SMT preflight
(preflight.py), then one base-image Volume per host; under GpuPassthroughVm a Domain
(machine.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
import pulumi_libvirt as libvirt

from config.errors import PREFIX
from config.models import Host, StackConfig
from hypervisors.libvirt import checks, connection, machine, preflight
from hypervisors.libvirt import mock as libvirt_mock
from hypervisors.libvirt import plan_files as libvirt_plan
from hypervisors.shared import Machine, changed_inputs
from render.identity import derived_mac


def _under_mocks() -> bool:
    """`make plan` and the tests run the program against pulumi.runtime.mocks: nothing connects, so no key is written."""
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import get_monitor

    return isinstance(get_monitor(), MockMonitor)


def hypervisor_ssh_key() -> str | None:
    """The hypervisors' SSH key, in plain text for the provider's key file: gpu-stack:hypervisorSshPrivateKey, else sshPrivateKey."""
    from pulumi.runtime.config import get_config

    return get_config(f"{PREFIX}:hypervisorSshPrivateKey") or get_config(f"{PREFIX}:sshPrivateKey")


def libvirt_providers(hosts: list[Host]) -> dict[str, libvirt.Provider]:
    """One provider per libvirt host; for qemu+ssh with the key and the pinned host key as files it reads
    (hypervisors/libvirt/connection.py), written before the provider connects and the key removed at exit."""
    providers = {}
    for h in hosts:
        files = None
        if connection.is_ssh(h.libvirt_uri):
            files = connection.material(pulumi.get_project(), pulumi.get_stack(), h.name, h.libvirt_uri, h.host_key)
            key = None if _under_mocks() else hypervisor_ssh_key()
            if key:
                connection.write_material(files, key)  # queued for removal at exit before it is written
        providers[h.name] = libvirt.Provider(f"libvirt-{h.name}", uri=connection.provider_uri(h.libvirt_uri, files))
    return providers


def _base_volume(host: Host, provider: libvirt.Provider, production: bool) -> libvirt.Volume:
    digest = hashlib.sha256(host.base_image.source.encode()).hexdigest()[:12]
    return libvirt.Volume(
        f"{host.name}-base-image",
        name=f"gpu-stack-base-{digest}.{host.base_image.format}",
        pool=host.storage_pool,
        source=host.base_image.source,
        format=host.base_image.format,
        opts=pulumi.ResourceOptions(provider=provider, retain_on_delete=production),
    )


class Preview:
    """One program run's libvirt hosts: their providers, the preflight's result, their base images."""

    def __init__(self, cfg: StackConfig, hosts: list[Host]):
        self.cfg, self.hosts = cfg, hosts
        self.providers = libvirt_providers(hosts)
        self.result = preflight.Preflight({}, {})
        self.bases: dict[str, libvirt.Volume] = {}

    def preflight(self, facts: dict, placements: dict) -> None:
        # through the module, so that tools/bench.py can time the two look-up rounds
        self.result = preflight.iommu_preflight(self.cfg, self.providers, facts, placements)
        preflight.smt_preflight(self.cfg, self.providers, facts)

    def declare(self) -> None:
        self.bases = {h.name: _base_volume(h, self.providers[h.name], self.cfg.production) for h in self.hosts}

    def place(self, vm) -> tuple[machine.LibvirtTarget, pulumi.ProviderResource]:
        return machine.LibvirtTarget(base_volume_id=self.bases[vm.host].id, hostdevs=self.result.hostdevs[vm.name]), self.providers[vm.host]

    def exports(self, vm_name: str) -> dict[str, Any]:
        """vms.<vm>.iommuGroups: the groups the preflight read, which `gpu-stack doctor` compares with the host."""
        return {"iommuGroups": self.result.groups[vm_name]} if vm_name in self.result.groups else {}


DOMAIN_UPDATABLE = ("autostart", "running", "cloudinit")
"""The libvirt Domain inputs that terraform-provider-libvirt v0.8.1 (pulumi-libvirt 0.5.4) changes in place:
resourceLibvirtDomainUpdate only starts a stopped domain, hot-swaps the cloud-init cdrom and sets autostart
(tests/reference/tf-libvirt-v0.8.1-NOTES.md, "The xml.xslt argument"; xml.xslt, vcpu and memory are
ForceNew). Any other changed input is counted as a replacement: a restart of the VM."""


class Libvirt:
    kind = "libvirt"
    vm_resource_type = "libvirt:index/domain:Domain"
    provider_tokens = ("libvirt:",)
    host_issues = staticmethod(checks.host_issues)
    vm_issues = staticmethod(checks.vm_issues)
    firmware_issues = staticmethod(checks.firmware_issues)
    default_network = staticmethod(checks.default_network)
    limits_address_bits = True
    """QEMU's limit: guest RAM plus the 64-bit PCI hole must fit the host's physical address bits."""
    convergence_rules: tuple = ()
    present_crds: tuple[str, ...] = ()

    @staticmethod
    def stack_issues(cfg: StackConfig, secrets: set[str], by_host: dict) -> list:
        return []

    @staticmethod
    def derived_mac(stack: str, vm_name: str) -> str:
        """A locally administered QEMU MAC (52:54:00:xx:xx:xx)."""
        return derived_mac(stack, vm_name)

    @staticmethod
    def connect(cfg: StackConfig, hosts: list[Host], secrets: dict) -> Preview:
        return Preview(cfg, hosts)

    @staticmethod
    def create(parent: pulumi.Resource, name: str, args, user_data: pulumi.Output[str]) -> Machine:
        return machine.create(parent, name, args, args.target, user_data)

    @staticmethod
    def declared_namespaces(cfg: StackConfig) -> tuple[set[str], dict[str, str]]:
        return set(), {}

    @staticmethod
    def replacement(old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """A changed input other than DOMAIN_UPDATABLE replaces the domain."""
        keys = [k for k in changed_inputs(old, new) if k not in DOMAIN_UPDATABLE]
        return f"{', '.join(keys)} changed (replaced: ForceNew in terraform-provider-libvirt v0.8.1)" if keys else None

    pins: tuple[tuple[str, str], ...] = ()
    plan_files = staticmethod(libvirt_plan.plan_files)
    plan_summary = staticmethod(libvirt_plan.plan_summary)
    mock = staticmethod(libvirt_mock.Mock)


BACKEND = Libvirt()
