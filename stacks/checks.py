"""Rules that relate several config fields, each reported at the key to change.

Every rule here is a pitfall from the field notes or a state libvirt,
kubeadm or Helm would only reject halfway through `pulumi up`.
"""

from __future__ import annotations

from collections import defaultdict

from render.catalog import BAR_SIZE_REQUIRED
from render.helm_values import CALICO_UPSTREAM
from render.mmio import hole64_gib, phys_bits_needed, required_hole64_gib
from render.numa import Placement, device_cells, place_host
from stacks.compat import device_plugin_problems
from stacks.config import StackConfig
from stacks.errors import ConfigIssue
from stacks.types import version_tuple

SECURE_BOOT_MARKERS = ("secboot", ".ms.", "snakeoil", "secure")


def _duplicates(names: list[str]) -> list[int]:
    seen: set[str] = set()
    dup = []
    for i, n in enumerate(names):
        if n in seen:
            dup.append(i)
        seen.add(n)
    return dup


def check_stack(cfg: StackConfig, secrets: set[str]) -> tuple[list[ConfigIssue], dict[str, Placement]]:
    """All cross-field problems, and the NUMA placement of every VM when there are none."""
    issues: list[ConfigIssue] = []
    for i in _duplicates([h.name for h in cfg.hosts]):
        issues.append(ConfigIssue(f"hosts[{i}].name", f"host name {cfg.hosts[i].name!r} is used twice; names must be unique"))
    for i in _duplicates([v.name for v in cfg.vms]):
        issues.append(ConfigIssue(f"vms[{i}].name", f"VM name {cfg.vms[i].name!r} is used twice; names must be unique"))

    host_index = {h.name: i for i, h in enumerate(cfg.hosts)}
    by_host: dict[str, list] = defaultdict(list)
    for vi, vm in enumerate(cfg.vms):
        if vm.host not in host_index:
            issues.append(ConfigIssue(f"vms[{vi}].host", f"no host named {vm.host!r}; declared hosts: {sorted(host_index) or 'none'}"))
            continue
        by_host[vm.host].append((vi, vm))

    placements: dict[str, Placement] = {}
    for host_name, vms in by_host.items():
        hi = host_index[host_name]
        host = cfg.hosts[hi]
        issues += _check_devices(host, vms)
        issues += _check_capacity(host, vms)
        placed, placement_issues = place_host(hi, host, vms)
        issues += placement_issues
        placements.update(placed)
        for vi, vm in vms:
            if vm.numa.expose_gpu_affinity and vm.name in placed and not placement_issues:
                issues += device_cells(vi, vm, placed[vm.name])[1]
        for vi, vm in vms:
            issues += _check_firmware_and_mmio(hi, host, vi, vm)

    issues += _check_guest_and_cluster(cfg, secrets)
    issues += _check_addons(cfg, secrets)
    issues += _check_fleet(cfg, secrets)
    return issues, placements


def _check_fleet(cfg: StackConfig, secrets: set[str]) -> list[ConfigIssue]:
    """Day 2: the rollout's wave size, the kubeconfig its drains need, and Blackwell parts whose BARs the catalog does not know (render/catalog.py)."""
    issues = []
    k = cfg.kubernetes
    if k is not None and k.mode == "join" and cfg.guest is not None and cfg.vms and "kubeconfig" not in secrets \
            and not any(i.path == "kubeconfig" for i in _check_addons(cfg, secrets)):
        issues.append(ConfigIssue("kubeconfig", "mode join: upgrades cordon, drain and uncordon the nodes with kubectl on the first VM, which needs the cluster's kubeconfig; "
                                                "set it with `pulumi config set --secret gpu-stack:kubeconfig < kubeconfig`"))
    nodes = len(cfg.vms)
    if cfg.vms and cfg.fleet.max_unavailable > nodes:
        issues.append(ConfigIssue("fleet.maxUnavailable", f"{cfg.fleet.max_unavailable} is more than the {nodes} VM{'s' if nodes != 1 else ''} of this stack; "
                                                           f"use 1 to {nodes} (GPU nodes drained and upgraded at the same time)"))
    for vi, vm in enumerate(cfg.vms):
        for gi, gpu in enumerate(vm.gpus):
            if gpu.model in BAR_SIZE_REQUIRED and gpu.bar1_gib is None:
                issues.append(ConfigIssue(f"vms[{vi}].gpus[{gi}].bar1Gib", f"{gpu.model}: the catalog has no cited BAR1 size for this part yet; set it from `lspci -vv -s {gpu.address}` "
                                                                           "(the largest 64-bit prefetchable Region, in GiB)"))
        for si, switch in enumerate(vm.nvswitches):
            if switch.model in BAR_SIZE_REQUIRED and switch.bar_mib is None:
                issues.append(ConfigIssue(f"vms[{vi}].nvswitches[{si}].barMib", f"{switch.model}: the catalog has no cited BAR size for this part yet; set it from `lspci -vv -s {switch.address}` (MiB)"))
    return issues


def _check_devices(host, vms) -> list[ConfigIssue]:
    issues = []
    owner: dict[str, str] = {}
    node_ids = {n.id for n in host.numa_nodes}
    for vi, vm in vms:
        for kind, devices in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
            for di, dev in enumerate(devices):
                key = f"vms[{vi}].{kind}[{di}]"
                if dev.address in owner:
                    issues.append(ConfigIssue(f"{key}.address", f"PCI device {dev.address} is already assigned to {owner[dev.address]}; a device can be passed through to one VM only, once"))
                owner.setdefault(dev.address, f"{key}")
                if dev.numa_node is None and len(host.numa_nodes) > 1:
                    issues.append(ConfigIssue(f"{key}.numaNode", f"host {host.name} has {len(host.numa_nodes)} NUMA nodes; set the node this device sits on (cat /sys/bus/pci/devices/{dev.address}/numa_node)"))
                elif dev.numa_node is not None and dev.numa_node not in node_ids:
                    issues.append(ConfigIssue(f"{key}.numaNode", f"host {host.name} has no NUMA node {dev.numa_node}; it has {sorted(node_ids)}"))
        if vm.nvswitches and not vm.gpus:
            issues.append(ConfigIssue(f"vms[{vi}].nvswitches", "NVSwitches without GPUs do nothing; pass them through with the GPUs they connect"))
    return issues


def _check_capacity(host, vms) -> list[ConfigIssue]:
    issues = []
    reserved = set(host.reserved_cpu_ids)
    cpus = sum(1 for n in host.numa_nodes for c in n.cpu_ids if c not in reserved)
    memory = sum(n.memory_gib for n in host.numa_nodes) - host.reserved_memory_gib
    total_vcpus = 0
    total_mem = 0
    for vi, vm in vms:
        total_vcpus += vm.vcpus
        total_mem += vm.memory_gib
        if total_vcpus > cpus:
            issues.append(ConfigIssue(f"vms[{vi}].vcpus", f"VMs on host {host.name} now ask for {total_vcpus} vCPUs; it has {cpus} CPUs after reservedCpus (vCPUs are pinned 1:1, no overcommit)"))
        if total_mem > memory:
            issues.append(ConfigIssue(f"vms[{vi}].memoryGib", f"VMs on host {host.name} now ask for {total_mem} GiB; it has {memory} GiB after reservedMemoryGib"))
    return issues


def _check_firmware_and_mmio(hi, host, vi, vm) -> list[ConfigIssue]:
    issues = []
    code = host.firmware.code.lower()
    looks_secure = host.firmware.secure_boot or any(m in code for m in SECURE_BOOT_MARKERS)
    if looks_secure and vm.gpus and not vm.firmware.allow_secure_boot_with_gpus:
        issues.append(ConfigIssue(
            f"hosts[{hi}].firmware.code",
            f"{host.firmware.code} is a Secure Boot OVMF build and VM {vm.name} has GPUs; seed 000 got a black screen and GPUs that failed to initialise. "
            f"Use a non-Secure-Boot build such as /usr/share/OVMF/OVMF_CODE_4M.fd, or set vms[{vi}].firmware.allowSecureBootWithGpus: true",
        ))
    needed = required_hole64_gib(vm)
    if vm.mmio_hole64_gib is not None:
        if vm.mmio_hole64_gib < needed:
            issues.append(ConfigIssue(f"vms[{vi}].mmioHole64Gib", f"{vm.mmio_hole64_gib} GiB cannot hold the 64-bit BARs of this VM's devices; at least {needed} GiB is needed (unset it to use the computed size)"))
        elif vm.mmio_hole64_gib & (vm.mmio_hole64_gib - 1):
            issues.append(ConfigIssue(f"vms[{vi}].mmioHole64Gib", f"{vm.mmio_hole64_gib} is not a power of two; BARs are naturally aligned, use {needed} or a larger power of two"))
    hole = hole64_gib(vm)
    if hole:
        bits = phys_bits_needed(vm.memory_gib, hole)
        if bits > host.phys_addr_bits:
            issues.append(ConfigIssue(f"vms[{vi}].memoryGib", f"{vm.memory_gib} GiB RAM plus a {hole} GiB PCI hole needs {bits} physical address bits; host {host.name} has {host.phys_addr_bits} (hosts[{hi}].physAddrBits)"))
    return issues


def _check_guest_and_cluster(cfg: StackConfig, secrets: set[str]) -> list[ConfigIssue]:
    issues = []
    if cfg.vms:
        if cfg.guest is None:
            issues.append(ConfigIssue("guest", "VMs are declared but there is no guest block (OS, SSH user and key, NVIDIA driver)"))
        if "sshPrivateKey" not in secrets:
            issues.append(ConfigIssue("sshPrivateKey", "required to reach the VMs; set it with `pulumi config set --secret gpu-stack:sshPrivateKey < ~/.ssh/id_ed25519`"))
    g = cfg.guest
    if g is not None:
        allowed = {"ubuntu": ("22.04", "24.04"), "rhel": ("9",)}[g.os.family]
        if g.os.version not in allowed:
            issues.append(ConfigIssue("guest.os.version", f"{g.os.family} {g.os.version} is not supported; accepted: {', '.join(allowed)}"))
        if g.nvidia.install_method == "runfile" and not g.nvidia.runfile_url:
            issues.append(ConfigIssue("guest.nvidia.runfileUrl", "installMethod runfile needs the URL (or mirror path) of NVIDIA-Linux-x86_64-<version>.run"))
        if g.registry_username and "registryPassword" not in secrets:
            issues.append(ConfigIssue("registryPassword", "guest.registryUsername is set; set the password with `pulumi config set --secret gpu-stack:registryPassword`"))
    k = cfg.kubernetes
    if k is not None:
        if k.mode == "join":
            if k.join is None:
                issues.append(ConfigIssue("kubernetes.join", "mode join needs controlPlaneEndpoint and caCertHash (`kubeadm token create --print-join-command` on a control-plane node prints both)"))
            if "joinToken" not in secrets:
                issues.append(ConfigIssue("joinToken", "mode join needs the bootstrap token; set it with `pulumi config set --secret gpu-stack:joinToken`"))
            if not cfg.vms:
                issues.append(ConfigIssue("kubernetes.mode", "mode join has no VMs to join"))
        if k.mode == "init" and not cfg.vms:
            issues.append(ConfigIssue("kubernetes.mode", "mode init needs at least one VM to run the control plane; for a cluster you already have, use mode existing"))
        if g is not None and g.container_runtime.name == "docker" and version_tuple(k.version)[:2] >= (1, 24):
            issues.append(ConfigIssue("guest.containerRuntime.name", f"Kubernetes {k.version} has no dockershim (removed in 1.24); use containerd, or Kubernetes <= 1.23 as in seed 001"))
        if k.mode in ("init", "join") and cfg.vms and k.package_repository is None and version_tuple(k.version)[:2] < (1, 24):
            issues.append(ConfigIssue("kubernetes.packageRepository", f"Kubernetes {k.version} is older than the community repository pkgs.k8s.io, which starts at v1.24 (the old apt.kubernetes.io and yum.kubernetes.io repositories are gone); set the base URL of a mirror that carries kubeadm, kubelet and kubectl {k.version}, laid out like pkgs.k8s.io/core:/stable:/v<minor> (deb/ and rpm/ below it)"))
        blocking = [t for t in k.node_taints if t.effect in ("NoSchedule", "NoExecute")]
        if k.mode == "init" and blocking:
            issues.append(ConfigIssue("kubernetes.nodeTaints", f"in mode init every node of the cluster is one of these GPU VMs, so {blocking[0].key}:{blocking[0].effect} on all of them leaves CoreDNS, Prometheus and every pod without the toleration Pending; set nodeTaints: [], or join the VMs to a cluster that has other nodes (mode join)"))
        if k.mode == "existing" and "kubeconfig" not in secrets:
            issues.append(ConfigIssue("kubeconfig", "mode existing needs the cluster's kubeconfig; set it with `pulumi config set --secret gpu-stack:kubeconfig < kubeconfig`"))
    return issues


def _check_addons(cfg: StackConfig, secrets: set[str]) -> list[ConfigIssue]:
    issues = []
    a = cfg.addons
    dp, op = a.device_plugin, a.gpu_operator
    any_addon = dp.enabled or op.enabled or a.monitoring.enabled or a.gpu_quotas
    if cfg.kubernetes is None:
        if any_addon and (dp.enabled or op.enabled):
            issues.append(ConfigIssue("kubernetes", "GPU add-ons are enabled but there is no kubernetes block (version, mode)"))
        return issues
    if dp.enabled and op.enabled and op.device_plugin_enabled:
        issues.append(ConfigIssue("addons.devicePlugin.enabled", "the standalone device plugin and the GPU Operator's device plugin would both run and fight over nvidia.com/gpu; disable one (addons.gpuOperator.devicePluginEnabled: false)"))
    if dp.enabled:
        for suffix, message in device_plugin_problems(dp.version, cfg.kubernetes.version, mig=dp.mig_strategy != "none", time_slicing=dp.time_slicing is not None):
            issues.append(ConfigIssue(f"addons.devicePlugin.{suffix}", message))
        if dp.time_slicing is not None and dp.mig_strategy == "mixed":
            issues.append(ConfigIssue("addons.devicePlugin.timeSlicing", "time-slicing with migStrategy mixed is not supported by the device plugin; use single or none"))
    if not dp.enabled and not (op.enabled and op.device_plugin_enabled) and cfg.vms:
        issues.append(ConfigIssue("addons", "no device plugin is enabled, so nvidia.com/gpu will never be allocatable; enable addons.devicePlugin or addons.gpuOperator"))
    if cfg.kubernetes.mode == "join" and any_addon and "kubeconfig" not in secrets:
        issues.append(ConfigIssue("kubeconfig", "mode join deploys the add-ons into a cluster this stack did not create; set its kubeconfig with `pulumi config set --secret gpu-stack:kubeconfig < kubeconfig`"))
    if a.monitoring.enabled and "grafanaAdminPassword" not in secrets:
        issues.append(ConfigIssue("grafanaAdminPassword", "monitoring is enabled; set the Grafana admin password with `pulumi config set --secret gpu-stack:grafanaAdminPassword`"))
    issues += _check_calico_images(a)
    for qi in _duplicates([q.namespace for q in a.gpu_quotas]):
        issues.append(ConfigIssue(f"addons.gpuQuotas[{qi}].namespace", "namespace listed twice"))
    for qi, q in enumerate(a.gpu_quotas):
        if q.default_request > q.gpus:
            issues.append(ConfigIssue(f"addons.gpuQuotas[{qi}].defaultRequest", f"default request {q.default_request} exceeds the quota of {q.gpus} GPUs"))
    return issues


def _check_calico_images(a) -> list[ConfigIssue]:
    """The Tigera operator pulls every Calico image from one registry and path: overrides must agree and keep the name."""
    issues = []
    calico = {k: v for k, v in a.images.overrides.items() if k.startswith(CALICO_UPSTREAM + "/")}
    if not calico:
        return issues
    node = calico.get(f"{CALICO_UPSTREAM}/node")
    if node is None:
        key = sorted(calico)[0]
        issues.append(ConfigIssue(f"addons.images.overrides[{key!r}]", f"the Tigera operator takes one registry and path for all Calico images; override {CALICO_UPSTREAM}/node (the others follow it), not {key}"))
        return issues
    path = node.rsplit("/", 1)[0]
    for key, value in sorted(calico.items()):
        name = key.rsplit("/", 1)[1]
        if value != f"{path}/{name}":
            issues.append(ConfigIssue(f"addons.images.overrides[{key!r}]", f"{value!r}: the Tigera operator pulls every Calico image as <registry>/<path>/<upstream name>; with {CALICO_UPSTREAM}/node at {node!r} this image must be {path}/{name}"))
    return issues
