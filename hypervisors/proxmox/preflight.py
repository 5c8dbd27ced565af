"""Proxmox VE hosts (`hosts[].kind: proxmox`): provider and preflight.

Everything here runs before any VM is declared: one explicit pulumi_proxmoxve.Provider per host, then
per node the provider's getVersion (the Proxmox VE release, against the minimums of the fields the
mapping sets: render.py MIN_PVE) and hardware getPci (GET /nodes/{node}/hardware/pci: every PCI
function with its IOMMU group). The IOMMU groups go through the one membership rule the libvirt
preflight and the doctor use (render/iommu.py): every member of a configured device's group must be
this VM's, a PCI bridge, or another function of the device (passed through with it). A host with
facts (GPU_STACK_HOST_FACTS) is read from them with no invoke, and its BARs, NUMA layout and address
bits are checked (facts/host_facts.py), its release (`pveversion`) as getVersion's would be. The facts
come from hypervisors/proxmox/host-facts.sh, run on the node: a file written by scripts/host-facts.sh
(libvirt's, which needs virsh) is refused for a Proxmox host. Anything wrong is a ConfigError naming the key.

getPci is asked with pci_class_blacklists=[]: its default (pve-manager PVE/API2/Hardware/PCI.pm,
"05;06;0b") drops class 06, bridges, and with it the NVSwitches (class 0x0680, `Bridge [0680]` in
tests/fixtures/host-facts/lspci-Dnn.8xH100-SXM-4xNVSwitch.kvm-host.txt) and the PCI bridges that
share a GPU's group. Neither the API nor the data source reports a device's NUMA node or BAR sizes:
those are checked only from host facts.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmoxve

from config.errors import ConfigError, ConfigIssue
from config.models import Host, StackConfig
from config.types import version_key
from facts.host_facts import HostFacts, check_host_facts
from hypervisors.proxmox.render import MAX_HOSTPCI, pci_devices, pve_version_problems
from render.iommu import NodeDevice, resolve_passthrough
from render.numa import Placement


def proxmox_provider(host: Host, secrets: dict[str, pulumi.Output[str]]) -> proxmoxve.Provider:
    """root@pam with its password when gpu-stack:proxmoxPassword is set (the root-only fields need it: checks.py),
    else the API token. SSH (the snippet upload) with the hypervisors' key: hypervisorSshPrivateKey, else sshPrivateKey."""
    p = host.proxmox
    auth: dict = {"username": "root@pam", "password": secrets["proxmoxPassword"]} if "proxmoxPassword" in secrets else {"api_token": secrets["proxmoxApiToken"]}
    key = secrets.get("hypervisorSshPrivateKey") or secrets.get("sshPrivateKey")
    return proxmoxve.Provider(
        f"proxmox-{host.name}",
        endpoint=p.endpoint,
        insecure=p.insecure,
        ssh=proxmoxve.ProviderSshArgs(username=p.ssh_user, private_key=key),
        **auth,
    )


def pci_node_devices(devices: list) -> dict[str, NodeDevice]:
    """getPci's rows (GetPciDeviceResult) as the IOMMU rule's NodeDevice, with the members of each group."""
    members: dict[int, list[str]] = {}
    for d in devices:
        if d.iommu_group >= 0:
            members.setdefault(d.iommu_group, []).append(d.id.lower())
    out = {}
    for d in devices:
        address = d.id.lower()
        group = tuple(sorted(members[d.iommu_group])) if d.iommu_group >= 0 else (address,)
        out[address] = NodeDevice(address=address, vendor_id=int(d.vendor, 16), class_code=int(d.class_, 16), product=d.device_name or "",
                                  numa_node=None, iommu_group=d.iommu_group, group_members=group, product_id=int(d.device, 16))
    return out


@dataclass(frozen=True)
class Preflight:
    hostdevs: dict[str, tuple[str, ...]]
    """Per VM: every host function to pass through (configured devices and their groups' other functions)."""
    groups: dict[str, dict[str, int]]
    """Per VM: the IOMMU group of each configured device, exported as vms.<vm>.iommuGroups (gpu-stack doctor compares it)."""


def _ask(hi: int, host: Host, provider: proxmoxve.Provider, issues: list[ConfigIssue]) -> tuple[dict[str, NodeDevice], str] | None:
    """The node's PCI functions and Proxmox VE release through the provider; None (and an issue) when it cannot be asked."""
    p = host.proxmox
    invoke = pulumi.InvokeOptions(provider=provider)
    try:
        version = proxmoxve.get_version(opts=invoke)
        pci = proxmoxve.hardware.get_pci(node_name=p.node, pci_class_blacklists=[], opts=invoke)
    except Exception as e:  # noqa: BLE001 - the provider's error, reported by key instead of as a traceback
        issues.append(ConfigIssue(f"hosts[{hi}].proxmox.node", f"the preflight could not ask node {p.node} at {p.endpoint}: {' '.join(str(e).split())}"))
        return None
    issues += release_issues(hi, host, version.release, f"{p.endpoint} runs", f" (pve-manager {version.version})")
    return pci_node_devices(list(pci.devices)), version.release


def proxmox_preflight(cfg: StackConfig, providers: dict[str, proxmoxve.Provider], facts: dict[str, HostFacts],
                      placements: dict[str, Placement]) -> Preflight:
    issues: list[ConfigIssue] = []
    hostdevs: dict[str, tuple[str, ...]] = {}
    groups: dict[str, dict[str, int]] = {}
    for hi, host in enumerate(cfg.hosts):
        if host.name not in providers:
            continue
        vms = [(vi, vm) for vi, vm in enumerate(cfg.vms) if vm.host == host.name]
        known = facts.get(host.name)
        if known is not None:
            if known.pve_release is None:
                issues.append(ConfigIssue(f"hosts[{hi}]", f"host facts {known.source} were written by scripts/host-facts.sh (libvirt's: no Proxmox VE release); "
                                                          f"collect {host.name}'s facts on the node with hypervisors/proxmox/host-facts.sh"))
                continue
            devices, where = known.node_devices, f"host facts {known.source}"
            issues += release_issues(hi, host, known.pve_release, f"host facts {known.source} record")
            issues += version_issues(hi, host, vms, known.pve_release)
        else:
            asked = _ask(hi, host, providers[host.name], issues)
            if asked is None:
                continue
            devices, where = asked[0], f"node {host.proxmox.node} (getPci)"
            issues += version_issues(hi, host, vms, asked[1])
        owners = {d.address: f"vms[{vi}] ({vm.name})" for vi, vm in vms for d in (*vm.gpus, *vm.nvswitches)}
        for vi, vm in vms:
            missing = False
            for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
                for di, d in enumerate(devs):
                    if d.address not in devices:
                        missing = True
                        issues.append(ConfigIssue(f"vms[{vi}].{kind}[{di}].address", f"{d.address} is not a PCI device of {where}; check `lspci -D` on {host.name}"))
                    elif devices[d.address].iommu_group < 0:
                        missing = True
                        issues.append(ConfigIssue(f"hosts[{hi}]", f"{d.address} on {host.name} is in no IOMMU group ({where}): the IOMMU is off; add intel_iommu=on iommu=pt "
                                                                  "(or amd_iommu=on) to the kernel command line, enable VT-d/AMD-Vi in the firmware, and reboot"))
            if missing:
                continue
            wanted = {d.address for d in (*vm.gpus, *vm.nvswitches)}
            seen = {a: devices[a] for a in wanted} | {m: devices[m] for a in wanted for m in devices[a].group_members if m in devices}
            elsewhere = {a: who for a, who in owners.items() if who != f"vms[{vi}] ({vm.name})"}
            resolved, vm_issues = resolve_passthrough(vi, vm, seen, elsewhere)
            issues += vm_issues
            slots = len(pci_devices(resolved))
            if not vm_issues and slots > MAX_HOSTPCI:
                issues.append(ConfigIssue(f"vms[{vi}].gpus", f"{slots} PCI devices counting the other functions of their IOMMU groups; a Proxmox VE VM has at most {MAX_HOSTPCI} hostpci slots"))
            hostdevs[vm.name] = resolved
            groups[vm.name] = {a: devices[a].iommu_group for a in sorted(wanted)}
    mine = {name: f for name, f in facts.items() if name in providers and f.pve_release is not None}
    if mine:
        issues += check_host_facts(cfg, mine, hostdevs, placements, libvirt_versions=False)
    if issues:
        raise ConfigError(issues)
    return Preflight(hostdevs, groups)


def release_issues(hi: int, host: Host, release: str, who: str, detail: str = "") -> list[ConfigIssue]:
    """hosts[].proxmox.pveVersion, where declared, against the node's release (getVersion, or the facts' `pveversion`)."""
    declared = host.proxmox.pve_version
    if declared is None or version_key(declared)[:2] == version_key(release)[:2]:
        return []
    return [ConfigIssue(f"hosts[{hi}].proxmox.pveVersion", f"is {declared}, but {who} Proxmox VE {release}{detail}; set pveVersion: \"{release}\"")]


def version_issues(hi: int, host: Host, vms: list, release: str) -> list[ConfigIssue]:
    """The node's release (getVersion) against what its VMs' mapping sets (render.py MIN_PVE)."""
    out = []
    for vi, vm in vms:
        for problem in pve_version_problems(release, bool(vm.gpus or vm.nvswitches), vm.numa.hugepages_1g):
            out.append(ConfigIssue(f"hosts[{hi}].proxmox.endpoint", f"{host.proxmox.endpoint} runs Proxmox VE {release}; vms[{vi}] ({vm.name}): {problem}"))
            break
    return out
