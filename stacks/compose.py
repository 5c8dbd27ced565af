"""Turn one environment's validated config into components.

Order matters for the promise that bad input registers nothing: config is
validated first (stacks.load), then the host facts files named by
GPU_STACK_HOST_FACTS are read and matched to hosts, then the only resources
the preflights need (each hypervisor's providers) are registered, then each
kind's preflight runs against the real hosts (or their facts, with no invoke),
and only then are shared volumes and VMs declared. Each step asks the
hypervisor table (hypervisors/base.py HYPERVISORS), never the kind itself.
"""

from __future__ import annotations

import gc
import os

import pulumi

from components.gpu_guest_bootstrap import GpuGuestBootstrap, GpuGuestBootstrapArgs, JoinTokenSource
from components.gpu_passthrough_vm import GpuPassthroughVm, GpuPassthroughVmArgs
from components.guest_command import GuestConnection
from components.node_upgrade import NodeUpgrade, NodeUpgradeArgs
from config.errors import ConfigError, ConfigIssue
from config.models import StackConfig
from facts.host_facts import ENV as HOST_FACTS_ENV
from facts.host_facts import FactsError, HostFacts, load_host_facts, match_host_facts
from hypervisors.base import HYPERVISORS
from render.guest_scripts import credentials_stdin_names, guest_phases, join_token_phase, upgrade_phases
from render.burnin import node_plans
from render.burnin_gate import burnin_phase
from render.helm_values import uses_runtime_class
from render.k8s_manifests import RUNTIME_CLASS
from render.rollout import waves
from render.verify_output import parse_verify_output
from render.vm_plan import plan_vm
from stacks.addons import build_addons, expected_allocatable, gpu_resource, plugin_logs_command
from stacks.checks import config_warnings
from stacks.load import LoadedStack, load_stack


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


def build(stack: LoadedStack) -> None:
    cfg = stack.config
    for warning in config_warnings(cfg):
        pulumi.log.warn(str(warning))
    facts = host_facts(cfg)
    used_hosts = [h for h in cfg.hosts if any(vm.host == h.name for vm in cfg.vms)]
    # per hosts[].kind (hypervisors/base.py): every kind's providers, then every kind's preflight, then what its VMs
    # share; all before any VM is declared
    previews = {kind: h.connect(cfg, [host for host in used_hosts if host.kind == kind], stack.secrets) for kind, h in HYPERVISORS.items()}
    for preview in previews.values():
        preview.preflight(facts, stack.placements)
    for preview in previews.values():
        preview.declare()
    hosts = {h.name: h for h in cfg.hosts}
    guest = cfg.guest

    vms: dict[str, GpuPassthroughVm] = {}
    for vm in cfg.vms:
        host = hosts[vm.host]
        target, provider = previews[host.kind].place(vm)
        vms[vm.name] = GpuPassthroughVm(
            vm.name,
            GpuPassthroughVmArgs(
                vm=vm,
                host=host,
                plan=plan_vm(vm, derived_mac=HYPERVISORS[host.kind].derived_mac(pulumi.get_stack(), vm.name), project=pulumi.get_project(),
                             stack=pulumi.get_stack(), placement=stack.placements[vm.name], ssh_user=guest.ssh_user, ssh_public_key=guest.ssh_public_key),
                provider=provider,
                production=cfg.production,
                target=target,
                hypervisor_key=stack.secrets.get("hypervisorSshPrivateKey") or stack.secrets.get("sshPrivateKey"),
            ),
        )

    bootstraps = build_guests(stack, vms)

    exported = {}
    for vm in cfg.vms:
        c = vms[vm.name]
        exported[vm.name] = {"mac": c.mac, "ip": c.ip, "domainId": c.domain_id, "hostPublicKey": c.host_public_key,
                             **previews[hosts[vm.host].kind].exports(vm.name)}
    pulumi.export("vms", exported)
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
