"""libvirt's preflight at preview: the IOMMU groups of every configured device and SMT, from the hosts or their facts.

Everything here runs before any VM is declared, against the libvirt provider of each host
(getNodeDeviceInfo, getNodeInfo), or against the host's facts file with no invoke.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt
from pulumi.runtime.sync_await import _sync_await

from config.errors import ConfigError, ConfigIssue
from config.models import StackConfig
from facts.host_facts import HostFacts, check_host_facts
from hypervisors.libvirt.domain_xslt import pcie_problems
from render.hypervisor import smt_undeclared
from render.iommu import NodeDevice, nodedev_name, parse_node_device, resolve_passthrough
from render.numa import Placement


# How many look-ups (getNodeDeviceInfo, getNodeInfo) are in flight at once: at
# most PREFLIGHT_PER_HOST to one hypervisor (the twelve devices of an HGX host in
# one round; libvirtd processes max_client_requests = 5 of one connection's
# requests at a time and queues the rest, libvirtd.conf), and at most
# PREFLIGHT_CONCURRENCY in all. Each runs the SDK's blocking monitor.Invoke on a
# thread of the event loop's default executor, which the Pulumi language host
# sizes from `--parallel` (unbounded by default), so `pulumi preview --parallel P`
# lowers it further. With one cap per host a fleet's first round is one round
# trip, however many hosts it has.
PREFLIGHT_PER_HOST = 16
PREFLIGHT_CONCURRENCY = 1024
_NODE_DEVICE_INFO = "libvirt:index/getNodeDeviceInfo:getNodeDeviceInfo"
_NODE_INFO = "libvirt:index/getNodeInfo:getNodeInfo"


async def _node_device(address: str, provider: libvirt.Provider) -> NodeDevice:
    """getNodeDeviceInfo as pulumi_libvirt.get_node_device_info calls it (token, option defaults), awaited."""
    opts = pulumi.InvokeOptions.merge(libvirt._utilities.get_invoke_opts_defaults(), pulumi.InvokeOptions(provider=provider))
    # the result as the provider sends it (camelCase keys, which parse_node_device reads): building
    # GetNodeDeviceInfoResult's output types for 12 look-ups per HGX host costs more than the parse
    info = await pulumi.runtime.invoke_async(_NODE_DEVICE_INFO, {"capability": None, "name": nodedev_name(address)}, opts=opts)
    return parse_node_device(address, info.get("capability"), info.get("xml"))


async def _threads_per_core(provider: libvirt.Provider) -> int | None:
    """getNodeInfo's cpu_threads_per_core, called as pulumi_libvirt.get_node_info calls it, awaited."""
    opts = pulumi.InvokeOptions.merge(libvirt._utilities.get_invoke_opts_defaults(), pulumi.InvokeOptions(provider=provider))
    info = await pulumi.runtime.invoke_async(_NODE_INFO, {}, opts=opts)
    threads = info.get("cpuThreadsPerCore")  # a protobuf Struct number: a float
    return int(threads) if threads is not None else None


def _all_at_once(wanted: list[tuple], call) -> dict:
    """call(*key) for every key (its first element the host) issued at once, at most PREFLIGHT_PER_HOST
    per host and PREFLIGHT_CONCURRENCY in all, then all awaited; the first failure in `wanted` order is raised.

    The program is synchronous, so this waits the way the SDK's own
    pulumi.runtime.invoke does: by pumping the event loop (_sync_await).
    """
    if not wanted:
        return {}

    async def every() -> list:
        gate = asyncio.Semaphore(PREFLIGHT_CONCURRENCY)
        per_host = {key[0]: asyncio.Semaphore(PREFLIGHT_PER_HOST) for key in wanted}

        async def one(key):
            async with per_host[key[0]], gate:
                return await call(*key)

        return await asyncio.gather(*(one(k) for k in wanted), return_exceptions=True)

    found = _sync_await(every())
    failed = next((r for r in found if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed
    return dict(zip(wanted, found))


@dataclass(frozen=True)
class LookupFailed:
    """A getNodeDeviceInfo the provider answered with an error: no such device, or no connection to the host."""

    message: str

    @property
    def not_found(self) -> bool:
        # libvirt's VIR_ERR_NO_NODE_DEVICE, as the provider passes it on (seen with pulumi-libvirt 0.5.4
        # against libvirtd 9.0.0: "failed to lookup node device: Node device not found: no node device
        # with matching name 'pci_0000_3b_00_0'")
        return "Node device not found" in self.message


async def _node_device_or_failure(address: str, provider: libvirt.Provider) -> NodeDevice | LookupFailed:
    try:
        return await _node_device(address, provider)
    except Exception as e:  # noqa: BLE001 - the invoke's error, reported by key instead of as a traceback
        return LookupFailed(" ".join(str(e).split()))


def _node_devices(wanted: list[tuple[str, str]], providers: dict[str, libvirt.Provider]) -> dict[tuple[str, str], NodeDevice | LookupFailed]:
    """Every (host, address) look-up issued at once, then all awaited; a failed one is a LookupFailed."""
    return _all_at_once(wanted, lambda host, address: _node_device_or_failure(address, providers[host]))


def _lookup_issues(cfg: StackConfig, fetched: dict[tuple[str, str], NodeDevice | LookupFailed]) -> list[ConfigIssue]:
    """One line per device the hypervisor does not have, or per host it could not be asked about."""
    issues: list[ConfigIssue] = []
    unreachable: set[str] = set()
    for vi, vm in enumerate(cfg.vms):
        for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
            for di, d in enumerate(devs):
                got = fetched.get((vm.host, d.address))
                if not isinstance(got, LookupFailed):
                    continue
                if got.not_found:
                    issues.append(ConfigIssue(f"vms[{vi}].{kind}[{di}].address", f"{d.address} is not a PCI device of host {vm.host} "
                                                                                f"(libvirt has no node device {nodedev_name(d.address)}); check `lspci -D` on {vm.host}"))
                elif vm.host not in unreachable:
                    unreachable.add(vm.host)
                    hi = next(i for i, h in enumerate(cfg.hosts) if h.name == vm.host)
                    issues.append(ConfigIssue(f"hosts[{hi}].libvirtUri", f"the IOMMU preflight could not ask host {vm.host}: {got.message}"))
    return issues



@dataclass(frozen=True)
class Preflight:
    hostdevs: dict[str, tuple[str, ...]]
    """Per VM: every host function to attach (configured devices and their groups' other functions)."""
    groups: dict[str, dict[str, int]]
    """Per VM: the IOMMU group of each configured device as the preflight read it, exported as
    `vms.<vm>.iommuGroups` so that `gpu-stack doctor` can tell when a group changed under a running VM."""


def iommu_preflight(cfg: StackConfig, providers: dict[str, libvirt.Provider], facts: dict[str, HostFacts] | None = None,
                    placements: dict[str, Placement] | None = None) -> Preflight:
    """Hostdevs per VM from the hosts' real IOMMU groups; ConfigError when a group cannot be assigned.

    A host with facts is read from them, with no getNodeDeviceInfo invoke;
    the facts' BAR sizes, NUMA layout and address bits are checked too.
    """
    facts = facts or {}
    issues: list[ConfigIssue] = []
    result: dict[str, tuple[str, ...]] = {}
    groups: dict[str, dict[str, int]] = {}
    owners: dict[tuple[str, str], str] = {}
    for vi, vm in enumerate(cfg.vms):
        for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
            for di, d in enumerate(devs):
                owners[(vm.host, d.address)] = f"vms[{vi}] ({vm.name})"
    # every host without facts: its configured devices in one round, then the
    # group members not yet read in a second; no invoke for hosts with facts
    asked = [vm for vm in cfg.vms if vm.host not in facts and vm.host in providers]  # libvirt hosts only
    fetched = _node_devices(list(dict.fromkeys((vm.host, d.address) for vm in asked for d in (*vm.gpus, *vm.nvswitches))), providers)
    failed = _lookup_issues(cfg, fetched)
    if failed:
        raise ConfigError(failed)
    members = {(vm.host, m) for vm in asked for d in (*vm.gpus, *vm.nvswitches) for m in fetched[(vm.host, d.address)].group_members}
    more = _node_devices(sorted(members - set(fetched)), providers)
    gone = {key: r for key, r in more.items() if isinstance(r, LookupFailed)}
    if gone:  # a group member that vanished between the two rounds, or the host went away
        raise ConfigError([ConfigIssue(f"hosts[{next(i for i, h in enumerate(cfg.hosts) if h.name == host)}].libvirtUri",
                                       f"the IOMMU preflight could not read {addr}, a member of a configured device's group on host {host}: {r.message}")
                           for (host, addr), r in sorted(gone.items())])
    fetched.update(more)
    for vi, vm in enumerate(cfg.vms):
        if vm.host not in providers:  # a host of another kind: its own preflight (hypervisors/vsphere/preflight.py)
            continue
        devices: dict[str, NodeDevice] = {}
        known = facts.get(vm.host)
        if known is not None:
            recorded = known.node_devices
            missing = []
            for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
                for di, d in enumerate(devs):
                    if d.address not in recorded:
                        missing.append(d.address)
                        issues.append(ConfigIssue(f"vms[{vi}].{kind}[{di}].address", f"{d.address} is not in host facts {known.source} (it records {', '.join(sorted(recorded)) or 'no device'}); "
                                                                                    f"rerun `scripts/host-facts.sh --host {vm.host} {d.address} ...` on {vm.host} with every configured address"))
            if missing:
                continue
            devices = {a: recorded[a] for a in {d.address for d in (*vm.gpus, *vm.nvswitches)}}
            for member in {m for dev in list(devices.values()) for m in dev.group_members} - set(devices):
                devices[member] = recorded[member]
        else:
            for d in (*vm.gpus, *vm.nvswitches):
                devices[d.address] = fetched[(vm.host, d.address)]
            for member in sorted({m for dev in list(devices.values()) for m in dev.group_members} - set(devices)):
                devices[member] = fetched[(vm.host, member)]
        elsewhere = {addr: who for (host, addr), who in owners.items() if host == vm.host and who != f"vms[{vi}] ({vm.name})"}
        hostdevs, vm_issues = resolve_passthrough(vi, vm, devices, elsewhere)
        issues += vm_issues
        if not vm.numa.expose_gpu_affinity and not vm_issues:
            # the config check counted configured devices; the IOMMU groups may add functions (a GPU's audio)
            for message in pcie_problems(None, len(hostdevs)):
                issues.append(ConfigIssue(f"vms[{vi}].gpus", f"{message}, counting the other functions of their IOMMU groups (vms[{vi}].gpus and vms[{vi}].nvswitches)"))
        result[vm.name] = hostdevs
        groups[vm.name] = {d.address: devices[d.address].iommu_group for d in (*vm.gpus, *vm.nvswitches)}
    # every libvirt-format file (a KubeVirt node's too: its backend has no facts check of its own), and any file
    # for a host of this backend; a file without libvirt versions (hypervisors/proxmox/host-facts.sh) for a host
    # of another kind is that backend's to check (a libvirt host given one is refused: check_host_facts)
    mine = {h: f for h, f in facts.items() if f.libvirt_version is not None or h in providers}
    if mine:
        issues += check_host_facts(cfg, mine, result, placements or {})
    if issues:
        raise ConfigError(issues)
    return Preflight(result, groups)


def smt_preflight(cfg: StackConfig, providers: dict[str, libvirt.Provider], facts: dict[str, HostFacts] | None = None) -> None:
    """Warn when a host has SMT (libvirt's node info, or its facts) that hosts[].threadSiblings does not describe.

    pulumi-libvirt 0.5.4 has no data source for the libvirt or QEMU version, so those come
    from hosts[].libvirtVersion / qemuVersion (render/hypervisor.py), not from here.
    """
    facts = facts or {}
    unread = [h for h in cfg.hosts if h.name in providers and not h.thread_siblings]
    unread_names = {h.name for h in unread}
    # one round for every host without facts, as the IOMMU preflight does: no wait per host
    asked = _all_at_once([(h.name,) for h in unread if h.name not in facts], lambda name: _threads_per_core(providers[name]))
    for hi, host in enumerate(cfg.hosts):
        if host.name not in unread_names:
            continue
        if host.name in facts:
            threads = max((len(s) for s in facts[host.name].smt_siblings), default=1)
        else:
            threads = asked[(host.name,)]
        message = smt_undeclared(hi, host, threads)
        if message:
            pulumi.log.warn(message)
