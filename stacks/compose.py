"""Turn one environment's validated config into components.

Order matters for the promise that bad input registers nothing: config is
validated first (stacks.load), then the host facts files named by
GPU_STACK_HOST_FACTS are read and matched to hosts, then the only resources
the preflight needs (one libvirt provider per host) are registered, then the
IOMMU preflight runs against the real hosts (or their facts, with no invoke),
and only then are volumes and VMs declared.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_libvirt as libvirt
from pulumi.runtime.sync_await import _sync_await

from components.gpu_guest_bootstrap import GpuGuestBootstrap, GpuGuestBootstrapArgs, JoinTokenSource
from components.gpu_passthrough_vm import GpuPassthroughVm, GpuPassthroughVmArgs, KubevirtTarget, LibvirtTarget
from components.guest_command import GuestConnection
from hypervisors.libvirt import connection
from render.domain_xslt import pcie_problems
from render.guest_scripts import credentials_stdin_names, guest_phases, join_token_phase, upgrade_phases
from render.hypervisor import smt_undeclared
from components.node_upgrade import NodeUpgrade, NodeUpgradeArgs
from render.burnin import node_plans
from render.burnin_gate import burnin_phase
from render.helm_values import uses_runtime_class
from render.k8s_manifests import RUNTIME_CLASS
from render.nvidia_smi import parse_verify_output
from render.rollout import waves
from render.host_facts import ENV as HOST_FACTS_ENV
from render.host_facts import FactsError, HostFacts, check_host_facts, load_host_facts, match_host_facts
from render import kubevirt as kubevirt_map
from render.kubevirt_capacity import check_capacity, unchecked_hosts
from render.kubevirt_capacity import expected_allocatable as kubevirt_allocatable
from render.iommu import NodeDevice, nodedev_name, parse_node_device, resolve_passthrough
from render.numa import Placement
from render.vm_plan import plan_vm
from stacks.checks import config_warnings
from stacks.config import Host, StackConfig
from stacks.errors import PREFIX, ConfigError, ConfigIssue
from stacks.addons import build_addons, expected_allocatable, gpu_resource, plugin_logs_command
from stacks.load import LoadedStack, load_stack
from stacks.vsphere_hosts import vsphere_preflight, vsphere_provider


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


def host_facts(cfg: StackConfig) -> dict[str, HostFacts]:
    """Facts by host from the files in GPU_STACK_HOST_FACTS (os.pathsep-separated); ConfigError on a bad or unmatched file."""
    paths = [p for p in os.environ.get(HOST_FACTS_ENV, "").split(os.pathsep) if p]
    loaded: list[HostFacts] = []
    issues: list[ConfigIssue] = []
    for path in paths:
        try:
            loaded.append(load_host_facts(path))
        except FactsError as e:
            issues.append(e.issue)
    by_host, more = match_host_facts(cfg, loaded)
    if issues or more:
        raise ConfigError(issues + more)
    return by_host


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
        if vm.host not in providers:  # a host of another kind: its own preflight (stacks/vsphere_hosts.py)
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
    if facts:
        issues += check_host_facts(cfg, facts, result, placements or {})
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


def kubevirt_host_cluster(cfg: StackConfig, stack: LoadedStack, used_hosts: list[Host], facts: dict[str, HostFacts]):
    """The host cluster's provider (gpu-stack:kubevirtKubeconfig, never the guest cluster's), the capacity check,
    the KubeVirt CR patch, and the VMs' Namespaces (by name).

    Capacity is checked before the provider is registered: a plan that asks for more devices
    than the node will advertise registers nothing. A Namespace is created once per namespace
    (hosts[].kubevirt.createNamespace); in production it is protected and kept on delete like
    the VMs, because deleting a namespace deletes every VM in it.
    """
    hosts = [h for h in used_hosts if h.kind == "kubevirt"]
    if not hosts:
        return None, (), {}
    problems = check_capacity(cfg, facts)
    if problems:
        raise ConfigError(problems)
    provider = k8s.Provider("kubevirt-host-cluster", kubeconfig=stack.secrets["kubevirtKubeconfig"])
    after: tuple[pulumi.Resource, ...] = ()
    patch = kubevirt_map.kubevirt_cr_patch(cfg, hosts)
    if patch is not None:
        after = (k8s.apiextensions.CustomResourcePatch(
            "kubevirt-config",
            api_version=patch["apiVersion"],
            kind=patch["kind"],
            metadata={**patch["metadata"], "annotations": {"pulumi.com/patchForce": "true"}},
            spec=patch["spec"],
            opts=pulumi.ResourceOptions(provider=provider),
        ),)
    keep = cfg.production
    namespaces = {
        doc["metadata"]["name"]: k8s.core.v1.Namespace(
            f"kubevirt-namespace-{doc['metadata']['name']}",
            metadata=doc["metadata"],
            # always kept on delete: pulumi-kubernetes' server-side apply adopts a namespace that was made by
            # hand before gpu-stack created it, and deleting a namespace deletes everything in it
            opts=pulumi.ResourceOptions(provider=provider, protect=keep, retain_on_delete=True),
        )
        for doc in kubevirt_map.vm_namespaces(hosts)
    }
    allocatable = kubevirt_allocatable(cfg, facts)
    pulumi.export("kubevirtExpectedAllocatable", allocatable)
    unchecked = unchecked_hosts(cfg, facts)
    if unchecked:
        pulumi.export("kubevirtCapacity", f"unchecked on {', '.join(unchecked)}: no host facts (scripts/host-facts.sh on the node)")
        pulumi.log.warn(f"KubeVirt capacity unchecked on {', '.join(unchecked)}: no host facts, so the IOMMU groups that decide what KubeVirt advertises are unknown")
    return provider, after, namespaces


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


def build(stack: LoadedStack) -> None:
    cfg = stack.config
    for warning in config_warnings(cfg):
        pulumi.log.warn(str(warning))
    facts = host_facts(cfg)
    used_hosts = [h for h in cfg.hosts if any(vm.host == h.name for vm in cfg.vms)]
    # per hosts[].kind: a provider and a preflight each, before any VM is declared
    libvirt_hosts = [h for h in used_hosts if h.kind == "libvirt"]
    providers = libvirt_providers(libvirt_hosts)
    vsphere_providers = {h.name: vsphere_provider(h, stack.secrets) for h in used_hosts if h.kind == "vsphere"}
    preflight = iommu_preflight(cfg, providers, facts, stack.placements)
    smt_preflight(cfg, providers, facts)
    vsphere_targets = vsphere_preflight(cfg, vsphere_providers)
    kubevirt_provider, kubevirt_after, kubevirt_namespaces = kubevirt_host_cluster(cfg, stack, used_hosts, facts)
    bases = {h.name: _base_volume(h, providers[h.name], cfg.production) for h in libvirt_hosts}
    hosts = {h.name: h for h in cfg.hosts}
    guest = cfg.guest

    vms: dict[str, GpuPassthroughVm] = {}
    for vm in cfg.vms:
        host = hosts[vm.host]
        if host.kind == "vsphere":
            target, provider = vsphere_targets[vm.name], vsphere_providers[vm.host]
            devices = target.pci_device_ids
        elif host.kind == "kubevirt":
            target = KubevirtTarget(after=kubevirt_after, ssh_node_port=kubevirt_map.ssh_node_port(cfg, vm),
                                    namespace=kubevirt_namespaces.get(host.kubevirt.namespace))
            provider = kubevirt_provider
            devices = tuple(kubevirt_map.device_resource(kind, d.model) for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)) for d in devs)
        else:
            target, provider = LibvirtTarget(base_volume_id=bases[vm.host].id), providers[vm.host]
            devices = preflight.hostdevs[vm.name]
        vms[vm.name] = GpuPassthroughVm(
            vm.name,
            GpuPassthroughVmArgs(
                vm=vm,
                host=host,
                plan=plan_vm(vm, kind=host.kind, project=pulumi.get_project(), stack=pulumi.get_stack(), placement=stack.placements[vm.name],
                             hostdevs=devices, ssh_user=guest.ssh_user, ssh_public_key=guest.ssh_public_key),
                provider=provider,
                production=cfg.production,
                target=target,
                hypervisor_key=stack.secrets.get("hypervisorSshPrivateKey") or stack.secrets.get("sshPrivateKey"),
            ),
        )

    bootstraps = build_guests(stack, vms)

    pulumi.export("vms", {
        name: {"mac": c.mac, "ip": c.ip, "domainId": c.domain_id, "hostPublicKey": c.host_public_key,
               **({"iommuGroups": preflight.groups[name]} if name in preflight.groups else {})}
        for name, c in vms.items()
    })
    pulumi.export("gpuInventory", {name: b.gpu_inventory for name, b in bootstraps.items()})
    kubeconfig = next((b.kubeconfig for b in bootstraps.values() if b.kubeconfig is not None), None)
    if kubeconfig is not None:
        pulumi.export("kubeconfig", kubeconfig)
    else:
        kubeconfig = stack.secrets.get("kubeconfig")
    gate = None
    if cfg.vms and cfg.guest is not None and _role(cfg, 0) in ("init", "join"):
        gate = guest_connection(stack, vms[cfg.vms[0].name])
    build_addons(stack, kubeconfig, [b.ready for b in bootstraps.values()], gate)


def guest_connection(stack: LoadedStack, machine: GpuPassthroughVm) -> GuestConnection:
    """SSH to a VM's guest: its address and port (a KubeVirt NodePort is not 22), the stack's key, the pinned host key."""
    return GuestConnection(host=machine.ip, user=stack.config.guest.ssh_user, private_key=stack.secrets["sshPrivateKey"],
                           host_key=machine.host_public_key, port=machine.ssh_port)


def _role(cfg: StackConfig, index: int) -> str:
    k = cfg.kubernetes
    if k is None or k.mode == "existing":
        return "none"
    if k.mode == "init":
        return "init" if index == 0 else "join"
    return "join"


def build_guests(stack: LoadedStack, vms: dict[str, GpuPassthroughVm]) -> dict[str, GpuGuestBootstrap]:
    """One GpuGuestBootstrap per VM; in mode init the first VM's cluster is joined by the rest."""
    cfg = stack.config
    if cfg.guest is None:
        return {}
    bootstraps: dict[str, GpuGuestBootstrap] = {}
    init_vm = cfg.vms[0] if cfg.kubernetes is not None and cfg.kubernetes.mode == "init" else None

    def connection(name: str) -> GuestConnection:
        return guest_connection(stack, vms[name])

    for index, vm in enumerate(cfg.vms):
        role = _role(cfg, index)
        late = None
        token = stack.secrets["joinToken"] if role == "join" and init_vm is None else None
        token_source = None
        if role == "join" and init_vm is not None:
            late = {
                "GS_K8S_ENDPOINT": vms[init_vm.name].ip.apply(lambda ip: f"{ip}:6443"),
                "GS_K8S_CA_HASH": bootstraps[init_vm.name].ca_cert_hash,
            }
            token_source = JoinTokenSource(
                phase=join_token_phase(vm, cfg.kubernetes),
                connection=connection(init_vm.name),
                after=[bootstraps[init_vm.name].control_plane],
                identity=vms[vm.name].domain_id,
            )
        bootstraps[vm.name] = GpuGuestBootstrap(
            f"{vm.name}-guest",
            GpuGuestBootstrapArgs(
                vm=vm,
                phases=guest_phases(vm, cfg.guest, cfg.kubernetes, role),
                connection=connection(vm.name),
                after=[vms[vm.name]],
                join_token=token,
                registry_password=stack.secrets.get("registryPassword"),
                credentials=guest_credentials(stack),
                late_params=late,
                join_token_source=token_source,
            ),
        )
    build_upgrades(stack, vms, bootstraps)
    return bootstraps


def guest_credentials(stack: LoadedStack) -> pulumi.Output[str] | None:
    """The stdin of phase credentials: one line per password whose user is set, in the order
    scripts/guest/credentials.sh reads them; a secret Output, so it never shows in the plan."""
    names = credentials_stdin_names(stack.config.guest) if stack.config.guest is not None else ()
    if not names:
        return None
    values = [stack.secrets[name] for name in names]  # stacks.checks refused a user without its password
    return pulumi.Output.secret(pulumi.Output.all(*values).apply(lambda vs: "".join(f"{v}\n" for v in vs)))


def build_upgrades(stack: LoadedStack, vms: dict[str, GpuPassthroughVm], bootstraps: dict[str, GpuGuestBootstrap]) -> dict[str, NodeUpgrade]:
    """Day 2: one NodeUpgrade per VM, chained wave after wave (render/rollout.waves), the control plane first.

    Each wave's first command depends on the previous wave's last ones, so the
    engine runs the waves; nothing in them runs on the first bootstrap. The
    bootstrap's gpuInventory then comes from upgrade-verify once it has run.
    """
    cfg = stack.config
    if cfg.guest is None or not cfg.vms:
        return {}
    k = cfg.kubernetes
    gate = guest_connection(stack, vms[cfg.vms[0].name])
    resource = gpu_resource(cfg)
    expected = expected_allocatable(cfg) if (cfg.addons.device_plugin.enabled or cfg.addons.gpu_operator.enabled) else {}
    by_name = {vm.name: (i, vm) for i, vm in enumerate(cfg.vms)}
    kubeconfig = bootstraps[cfg.vms[0].name].kubeconfig if k is not None and k.mode == "init" else stack.secrets.get("kubeconfig")
    secrets = {
        # upgrade-kubernetes hands stdin to kubernetes.sh, which never re-joins a member: in mode init
        # (per-VM short-lived tokens, phase join-token) an upgrade needs no token, so it gets an empty one
        "joinToken": stack.secrets.get("joinToken") or pulumi.Output.secret(""),
        "registryPassword": stack.secrets.get("registryPassword"),
        "kubeconfig": kubeconfig,
    }
    upgrades: dict[str, NodeUpgrade] = {}
    previous_wave: list[pulumi.Resource] = []
    rollout = waves(cfg)
    burn_in = node_plans(cfg)
    runtime_class = RUNTIME_CLASS if uses_runtime_class(cfg.guest) else None
    for wave in rollout:
        done = []
        for name in wave:
            index, vm = by_name[name]
            role = _role(cfg, index)
            bootstrap = bootstraps[name]
            phases = upgrade_phases(vm, guest_phases(vm, cfg.guest, k, role), cfg.fleet, role,
                                    control_plane=role == "init", gpu_resource=resource,
                                    expected_allocatable=expected.get(name, {}).get(resource),
                                    plugin_logs=plugin_logs_command(cfg), kubeconfig_on_stdin=k is not None and k.mode != "init",
                                    in_cluster=k is not None and k.mode == "existing", family=cfg.guest.os.family,
                                    burn_in=burnin_phase(burn_in[name], cfg, "upgrade", runtime_class, resource,
                                                         kubeconfig_on_stdin=k is not None and k.mode != "init") if name in burn_in else None)
            upgrade = NodeUpgrade(f"{name}-upgrade", NodeUpgradeArgs(
                node_name=name, phases=phases,
                node=guest_connection(stack, vms[name]),
                control_plane=gate if role in ("init", "join") else None,
                after=[bootstrap.ready, *previous_wave], secrets=secrets,
            ))
            bootstrap.gpu_inventory = pulumi.Output.all(upgrade.verify_stdout, bootstrap.verify_stdout).apply(
                lambda out: parse_verify_output(out[0] or out[1]))
            upgrades[name] = upgrade
            done.append(upgrade.done)
        previous_wave = done
    for index, wave in enumerate(rollout):
        # `pulumi preview` shows which <vm>-upgrade-* commands update; this says in which wave they run
        pulumi.log.info(f"rollout wave {index}: {', '.join(wave)} (upgrade commands run only when a version changes; "
                        f"fleet.maxUnavailable {cfg.fleet.max_unavailable}, control plane first)")
    pulumi.export("rollout", {"waves": rollout, "maxUnavailable": cfg.fleet.max_unavailable,
                              "drainTimeoutSeconds": cfg.fleet.drain_timeout_seconds})
    return upgrades


# The cyclic collector's thresholds for the program's process. Python's default
# (700, 10, 10) runs a young collection every 700 allocations and a full one
# every 100 of those, over a heap that only grows while resources are declared
# (the SDK keeps every resource, Output and future alive until the run ends):
# about 40% of a 64-VM preview was the collector, the SDK floor's as much
# (docs/PERFORMANCE.md). Collecting less often frees the same cycles later.
GC_THRESHOLDS = (20_000, 50, 100)


def tune_collector() -> None:
    """Raise the cyclic collector's thresholds for this process (GC_THRESHOLDS)."""
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> None:
    tune_collector()
    build(load_stack())
