"""Rules that relate several config fields, each reported at the key to change.

Every rule here is a pitfall from the field notes or a state libvirt,
kubeadm or Helm would only reject halfway through `pulumi up`.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict

from config.catalog import BAR_SIZE_REQUIRED
from render.burnin import node_plans
from render.drift_check import KUBECTL_IMAGE_SINCE
from render.helm_values import CALICO_UPSTREAM
from render.identity import derived_mac
from config.catalog import GPU_MODELS, OPEN_MODULES_SINCE_BRANCH, OPEN_ONLY, PROPRIETARY_ONLY, default_kernel_modules
from render.hypervisor import domain_elements, version_problems
from hypervisors.libvirt.domain_xslt import pcie_problems
from render.guest_scripts import min_disk_gib
from render.mmio import hole64_gib, phys_bits_needed, required_hole64_gib
from render.numa import Placement, device_cells, node_memory_issues, place_host
from datetime import date

from config.compat import device_plugin_problems, gpu_operator_problems, kubernetes_version_warning
from config import support
from config.models import StackConfig
from hypervisors.base import HYPERVISORS
from config.errors import ConfigIssue
from config.types import format_cpu_list, version_tuple

SECURE_BOOT_MARKERS = ("secboot", ".ms.", "snakeoil", "secure")


def _duplicates(names: list[str]) -> list[int]:
    seen: set[str] = set()
    dup = []
    for i, n in enumerate(names):
        if n in seen:
            dup.append(i)
        seen.add(n)
    return dup


# kubelet --node-labels may only use these in the kubernetes.io / k8s.io namespaces
# (k8s.io/kubernetes/pkg/kubelet/apis/well_known_labels.go, KEP-0000 NodeRestriction).
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
KUBELET_LABELS = (
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
)


def check_stack(cfg: StackConfig, secrets: set[str], stack: str | None = None) -> tuple[list[ConfigIssue], dict[str, Placement]]:
    """All cross-field problems, and the NUMA placement of every VM when there are none.

    `stack` (the Pulumi stack name) lets a fixed MAC be compared with the MACs
    derived for the other VMs; without it only fixed MACs are compared.
    """
    issues: list[ConfigIssue] = []
    if not cfg.vms and cfg.kubernetes is None:
        issues.append(ConfigIssue("vms", (
            "the stack declares nothing to build: a stack needs hosts and vms (GPU VMs on hypervisors), "
            "or a kubernetes block with mode existing (the GPU add-ons for a cluster you already have)"
        )))
    issues += _check_hosts(cfg)
    issues += _check_network(cfg, stack)
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

    issues += _check_host_kinds(cfg, secrets, by_host)
    placements: dict[str, Placement] = {}
    for host_name, vms in by_host.items():
        hi = host_index[host_name]
        host = cfg.hosts[hi]
        issues += _check_devices(host, vms)
        capacity = _check_capacity(hi, host, vms)
        issues += capacity
        placed, placement_issues = place_host(hi, host, vms)
        issues += placement_issues
        if not capacity and not placement_issues:
            # per NUMA node only once the host's total fits: one mistake, one line
            issues += node_memory_issues(hi, host, vms, placed)
        placements.update(placed)
        for vi, vm in vms:
            cells_of = None
            if vm.numa.expose_gpu_affinity and vm.name in placed and not placement_issues:
                cells_of, cell_issues = device_cells(vi, vm, placed[vm.name])
                issues += cell_issues
            if vm.numa.expose_gpu_affinity and cells_of is None:
                continue
            per_cell = None
            if cells_of is not None:
                per_cell = defaultdict(int)
                for cell in cells_of.values():
                    per_cell[cell] += 1
            for message in pcie_problems(dict(per_cell) if per_cell is not None else None, len(vm.gpus) + len(vm.nvswitches)):
                issues.append(ConfigIssue(f"vms[{vi}].gpus", f"{message} (vms[{vi}].gpus and vms[{vi}].nvswitches)"))
        for vi, vm in vms:
            issues += _check_firmware_and_mmio(hi, host, vi, vm)
        issues += _check_hypervisor_versions(hi, host, vms)

    issues += _check_disks(cfg)
    issues += _check_guest_and_cluster(cfg, secrets)
    issues += _check_kernel_modules(cfg)
    issues += _check_driver_branch(cfg)
    issues += _check_cidrs(cfg)
    issues += _check_labels(cfg)
    issues += _check_addons(cfg, secrets)
    issues += _check_fleet(cfg, secrets)
    return issues, placements


def _check_hosts(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    for hi, host in enumerate(cfg.hosts):
        owner: dict[int, int] = {}
        for ni, node in enumerate(host.numa_nodes):
            key = f"hosts[{hi}].numaNodes[{ni}]"
            if node.id in [n.id for n in host.numa_nodes[:ni]]:
                issues.append(ConfigIssue(f"{key}.id", f"NUMA node id {node.id} is declared twice on host {host.name}; ids must be unique"))
            shared = sorted(c for c in node.cpu_ids if c in owner)
            if shared:
                others = sorted({owner[c] for c in shared})
                issues.append(ConfigIssue(f"{key}.cpus", (
                    f"CPUs {format_cpu_list(shared)} are also in hosts[{hi}].numaNodes[{', '.join(map(str, others))}].cpus; "
                    "a CPU belongs to exactly one NUMA node (/sys/devices/system/node/nodeN/cpulist)"
                )))
            for c in node.cpu_ids:
                owner.setdefault(c, ni)
        unknown = [c for c in host.reserved_cpu_ids if c not in owner]
        if unknown:
            issues.append(ConfigIssue(f"hosts[{hi}].reservedCpus", (
                f"CPUs {format_cpu_list(unknown)} are on none of host {host.name}'s NUMA nodes "
                f"(its CPUs: {format_cpu_list(list(owner))}, hosts[{hi}].numaNodes[].cpus); reserve CPUs the host has"
            )))
    return issues


def _check_network(cfg: StackConfig, stack: str | None) -> list[ConfigIssue]:
    issues = []
    macs: dict[str, str] = {}
    derived: dict[str, str] = {}
    if stack is not None:
        for vi, vm in enumerate(cfg.vms):
            if vm.network.mac is None:
                mac = derived_mac(stack, vm.name)
                if mac in derived and not derived[mac].endswith(f"({vm.name})"):  # a repeated name is reported at vms[].name
                    issues.append(ConfigIssue(f"vms[{vi}].network.mac", f"the MAC derived for this VM, {mac}, is also derived for {derived[mac]} (a "
                                                                        f"hash collision); set a fixed vms[{vi}].network.mac"))
                derived.setdefault(mac, f"vms[{vi}] ({vm.name})")
    addresses: dict[str, str] = {}
    for vi, vm in enumerate(cfg.vms):
        mac = vm.network.mac
        if mac is not None:
            if mac in macs:
                issues.append(ConfigIssue(f"vms[{vi}].network.mac", f"MAC {mac} is also the MAC of {macs[mac]} (compared case-insensitively); every VM "
                                                                    "needs its own, or its DHCP lease and IP move between them"))
            elif mac in derived:
                issues.append(ConfigIssue(f"vms[{vi}].network.mac", f"MAC {mac} is the MAC derived for {derived[mac]}, which sets no vms[].network.mac; pick another MAC"))
            macs.setdefault(mac, f"vms[{vi}] ({vm.name})")
        address = vm.network.address
        if address is not None:
            if address in addresses:
                issues.append(ConfigIssue(f"vms[{vi}].network.address", f"{address} is also the address of {addresses[address]}; each VM needs its own"))
            addresses.setdefault(address, f"vms[{vi}] ({vm.name})")
    return issues


def _check_cidrs(cfg: StackConfig) -> list[ConfigIssue]:
    """kubeadm init's pod and service networks must not overlap each other or the nodes' network."""
    k = cfg.kubernetes
    if k is None or k.mode != "init":
        return []
    issues = []
    pod, service = ipaddress.ip_network(k.pod_cidr), ipaddress.ip_network(k.service_cidr)
    if pod.version == service.version and pod.overlaps(service):
        issues.append(ConfigIssue("kubernetes.podCidr", f"{pod} overlaps kubernetes.serviceCidr {service}; pods and services need disjoint networks"))
    hosts = {h.name: h for h in cfg.hosts}
    for vi, vm in enumerate(cfg.vms):
        assumed = HYPERVISORS[hosts[vm.host].kind].default_network(vm) if vm.host in hosts else None
        for key, net in (("podCidr", pod), ("serviceCidr", service)):
            if vm.network.address is not None:
                address = ipaddress.ip_address(vm.network.address)
                if address.version == net.version and address in net:
                    issues.append(ConfigIssue(f"kubernetes.{key}", f"{net} contains vms[{vi}].network.address {address} ({vm.name}); node, pod and service networks must be disjoint"))
            elif assumed is not None and net.version == assumed[0].version and net.overlaps(assumed[0]):
                issues.append(ConfigIssue(f"kubernetes.{key}", (
                    f"{net} overlaps {assumed[0]}, {assumed[1]} that vms[{vi}] ({vm.name}) attaches to "
                    f"(vms[{vi}].network.name); node, pod and service networks must be disjoint. If that network is numbered differently, set vms[{vi}].network.address"
                )))
    return issues


def _check_labels(cfg: StackConfig) -> list[ConfigIssue]:
    k = cfg.kubernetes
    if k is None:
        return []
    issues = []
    for label in sorted(k.node_labels):
        prefix = label.rpartition("/")[0]
        restricted = prefix in ("kubernetes.io", "k8s.io") or prefix.endswith((".kubernetes.io", ".k8s.io"))
        allowed = label in KUBELET_LABELS or prefix in KUBELET_LABEL_NAMESPACES or prefix.endswith(tuple(f".{n}" for n in KUBELET_LABEL_NAMESPACES))
        if restricted and not allowed:
            issues.append(ConfigIssue(f"kubernetes.nodeLabels.{label}", (
                "kubelet refuses --node-labels in the kubernetes.io and k8s.io namespaces except "
                f"{', '.join(KUBELET_LABEL_NAMESPACES)} and the well-known labels; use your own prefix such as example.com/"
            )))
    return issues


def _check_disks(cfg: StackConfig) -> list[ConfigIssue]:
    if cfg.guest is None:
        return []
    issues = []
    free = cfg.guest.min_root_free_gib
    need = min_disk_gib(free)
    for vi, vm in enumerate(cfg.vms):
        if vm.disk_gib < need:
            issues.append(ConfigIssue(f"vms[{vi}].diskGib", (
                f"{vm.disk_gib} GiB cannot leave guest.minRootFreeGib ({free} GiB) free on / once the OS is installed, "
                f"so the guest preflight would stop; use at least {need} GiB, or lower guest.minRootFreeGib"
            )))
    return issues


def _check_fleet(cfg: StackConfig, secrets: set[str]) -> list[ConfigIssue]:
    """Day 2: the rollout's wave size, the kubeconfig its drains need, and Blackwell parts whose BARs the catalog does not know (config/catalog.py)."""
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
                issues.append(ConfigIssue(f"vms[{vi}].nvswitches[{si}].barMib", f"{switch.model}: the catalog has no cited BAR size for this part yet; "
                                                                                f"set it from `lspci -vv -s {switch.address}` (MiB)"))
    return issues + _check_burn_in(cfg)


def _check_burn_in(cfg: StackConfig) -> list[ConfigIssue]:
    """Every node that burns in has an expected all-reduce figure (catalog or config)."""
    issues = []
    plans = node_plans(cfg)
    missing: set[str] = set()
    for vi, vm in enumerate(cfg.vms):
        plan = plans.get(vm.name)
        if plan is None:
            continue
        if plan.expected.origin == "missing" and (plan.expected.model, plan.gpus) not in missing:
            missing.add((plan.expected.model, plan.gpus))
            issues.append(ConfigIssue("burnIn.expectedBusbwGbps", f"{plan.expected.model}: no sourced all-reduce busbw for {plan.gpus} GPUs "
                                      f"(vms[{vi}] {vm.name}: {plan.expected.source}); give `{plan.expected.model}: <GB/s>` measured on a "
                                      "healthy node (docs/OPERATIONS.md, Burn-in), or set burnIn.nccl: false"))
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
                    issues.append(ConfigIssue(f"{key}.numaNode", f"host {host.name} has {len(host.numa_nodes)} NUMA nodes; set the node this device "
                                                                 f"sits on (cat /sys/bus/pci/devices/{dev.address}/numa_node)"))
                elif dev.numa_node is not None and dev.numa_node not in node_ids:
                    issues.append(ConfigIssue(f"{key}.numaNode", f"host {host.name} has no NUMA node {dev.numa_node}; it has {sorted(node_ids)}"))
        if vm.nvswitches and not vm.gpus:
            issues.append(ConfigIssue(f"vms[{vi}].nvswitches", f"NVSwitches without GPUs (vms[{vi}].gpus is empty) do nothing; pass them through with the GPUs they connect"))
        issues += _check_board(vi, vm)
    return issues


FM_GUIDE = "NVIDIA Fabric Manager User Guide 2.3, Full Passthrough Virtualization Model"


def _check_board(vi: int, vm) -> list[ConfigIssue]:
    """A VM's NVSwitches against the board its GPUs sit on (config/catalog.py NVSWITCH_BOARD, PCIE_GPUS).

    PCIe cards have no NVSwitch. On an NVSwitch baseboard, full passthrough gives a VM the NVSwitches the
    Fabric Manager guide's table of supported VM configurations lists for its number of GPUs: the whole
    board (8 GPUs) gets all of the board's switches; a partial board gets what the table gives its size
    (HGX A100: 4 GPUs 3 switches, 2 GPUs 1, 1 GPU none; HGX H100/H200/H800/H20 and B200/B300: 1 GPU none),
    and a size the table does not list gets none (no full-passthrough partition has switches for it). On
    HGX B200/B300 the NVSwitches are not PCIe devices at all (the guide passes the board's four CX7 bridge
    functions instead), so what nvswitches[] names there is unsettled and not checked; neither are models
    with no cited board (V100-SXM2-32GB)."""
    from config.catalog import NVSWITCH_BOARD, PCIE_GPUS

    if not vm.gpus:
        return []
    key = f"vms[{vi}].nvswitches"
    models = sorted({g.model for g in vm.gpus})
    pcie = [m for m in models if m in PCIE_GPUS]
    if pcie and vm.nvswitches:
        return [ConfigIssue(key, f"{', '.join(pcie)} {'is a PCIe card' if len(pcie) == 1 else 'are PCIe cards'} with no NVSwitch baseboard; "
                                 f"NVSwitches belong only with the SXM GPUs of their own HGX board: remove vms[{vi}].nvswitches")]
    boards = {NVSWITCH_BOARD[m] for m in models if m in NVSWITCH_BOARD}
    if not boards or len(boards) != len(models) and any(m not in NVSWITCH_BOARD for m in models):
        return []  # no cited board (V100-SXM2), alone or mixed with one: not checked
    if len(boards) > 1:
        if not vm.nvswitches:
            return []
        return [ConfigIssue(key, f"the GPUs are of different boards ({', '.join(f'{m} on {NVSWITCH_BOARD[m].name}' for m in models)}); "
                                 "NVSwitches serve the GPUs of their own board only: give this VM one board's GPUs, or no NVSwitches")]
    [board] = boards
    n, have = len(vm.gpus), len(vm.nvswitches)
    what = f"{n} x {'/'.join(models)} (vms[{vi}].gpus)"
    table = ", ".join(f"{g} GPU{'s' if g > 1 else ''} {s}" for g, s in board.partitions)
    if not board.switches_are_pci_devices:
        # HGX B200/B300: the guide passes the board's four CX7 bridge functions, not the NVSwitches; what
        # nvswitches[] names there is unsettled (config/catalog.py), so its count is not checked
        return []
    want = dict(board.partitions).get(n)
    if want is None:
        if not have:
            return []
        return [ConfigIssue(key, f"{what} are part of an {board.name} board ({board.nvswitches} NVSwitches); full passthrough has no partition of {n} GPUs "
                                 f"with NVSwitches ({FM_GUIDE}: VM GPUs to NVSwitches {table}); give the VM a size the table lists with its NVSwitches, or no NVSwitches")]
    if have != want:
        return [ConfigIssue(key, f"{what} on an {board.name} board ({board.nvswitches} NVSwitches) get {want} NVSwitch{'es' if want != 1 else ''} in full passthrough, "
                                 f"this VM has {have} ({FM_GUIDE}: VM GPUs to NVSwitches {table})")]
    issues = []
    for si, switch in enumerate(vm.nvswitches):
        if switch.model != board.switch_model:
            issues.append(ConfigIssue(f"{key}[{si}].model", f"is {switch.model}, but {what} sit on an {board.name} board, whose NVSwitches are {board.switch_model}; set model: {board.switch_model}"))
    return issues


def _check_capacity(hi, host, vms) -> list[ConfigIssue]:
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
            issues.append(ConfigIssue(f"vms[{vi}].vcpus", f"VMs on host {host.name} now ask for {total_vcpus} vCPUs; it has {cpus} CPUs "
                                                          f"(hosts[{hi}].numaNodes[].cpus less hosts[{hi}].reservedCpus; vCPUs are pinned 1:1, no "
                                                          "overcommit)"))
        if total_mem > memory:
            issues.append(ConfigIssue(f"vms[{vi}].memoryGib", f"VMs on host {host.name} now ask for {total_mem} GiB; it has {memory} GiB "
                                                              f"(hosts[{hi}].numaNodes[].memoryGib less hosts[{hi}].reservedMemoryGib)"))
    return issues


def _check_firmware_and_mmio(hi, host, vi, vm) -> list[ConfigIssue]:
    issues = []
    code = host.firmware.code.lower()
    looks_secure = host.firmware.secure_boot or any(m in code for m in SECURE_BOOT_MARKERS)
    if looks_secure and vm.gpus and not vm.firmware.allow_secure_boot_with_gpus:
        issues.append(ConfigIssue(
            f"hosts[{hi}].firmware.code",
            f"{host.firmware.code} is a Secure Boot OVMF build{f' (hosts[{hi}].firmware.secureBoot)' if host.firmware.secure_boot else ''} and VM "
            f"{vm.name} has GPUs; seed 000 got a black screen and GPUs that failed to initialise. "
            f"Use a non-Secure-Boot build such as /usr/share/OVMF/OVMF_CODE_4M.fd, or set vms[{vi}].firmware.allowSecureBootWithGpus: true",
        ))
    needed = required_hole64_gib(vm)
    if vm.mmio_hole64_gib is not None:
        if vm.mmio_hole64_gib < needed:
            issues.append(ConfigIssue(f"vms[{vi}].mmioHole64Gib", f"{vm.mmio_hole64_gib} GiB cannot hold the 64-bit BARs of this VM's devices; at least "
                                                                  f"{needed} GiB is needed (unset it to use the computed size)"))
        elif vm.mmio_hole64_gib & (vm.mmio_hole64_gib - 1):
            issues.append(ConfigIssue(f"vms[{vi}].mmioHole64Gib", f"{vm.mmio_hole64_gib} is not a power of two; BARs are naturally aligned, use {needed} or a larger power of two"))
    hole = hole64_gib(vm)
    if hole and HYPERVISORS[host.kind].limits_address_bits:  # QEMU's limit; ESXi sizes the guest's address space itself
        bits = phys_bits_needed(vm.memory_gib, hole)
        if bits > host.phys_addr_bits:
            issues.append(ConfigIssue(f"vms[{vi}].memoryGib", f"{vm.memory_gib} GiB RAM plus a {hole} GiB PCI hole needs {bits} physical address bits; "
                                                              f"host {host.name} has {host.phys_addr_bits} (hosts[{hi}].physAddrBits)"))
    return issues


def _credential_issues(cfg: StackConfig, secrets: set[str]) -> list[ConfigIssue]:
    """Each user key and its password secret come together, and the user is for something configured.

    The passwords reach the guest only on stdin (render/guest_scripts.py phase credentials)."""
    from render.guest_scripts import authenticated_hosts

    g = cfg.guest
    assert g is not None
    issues = []
    proxy_user = g.proxy.username if g.proxy else None
    if proxy_user:
        if not (g.proxy.http or g.proxy.https):
            issues.append(ConfigIssue("guest.proxy.username", "is set but guest.proxy has neither http nor https; give the proxy URL (without credentials) or remove the user"))
        if "proxyPassword" not in secrets:
            issues.append(ConfigIssue("proxyPassword", "guest.proxy.username is set; set the password with `pulumi config set --secret gpu-stack:proxyPassword`"))
    elif "proxyPassword" in secrets:
        issues.append(ConfigIssue("proxyPassword", "is set but guest.proxy.username is not; set the user the proxy asks for, or remove the secret"))
    if g.repository_username:
        if not authenticated_hosts(g, cfg.kubernetes):
            issues.append(ConfigIssue("guest.repositoryUsername", "is set but no mirror is configured: it is used for guest.repositories.*, guest.containerRuntime.dockerRepository, "
                                                                  "kubernetes.packageRepository and runfile URLs; set one of them or remove the user"))
        if "repositoryPassword" not in secrets:
            issues.append(ConfigIssue("repositoryPassword", "guest.repositoryUsername is set; set the password with `pulumi config set --secret gpu-stack:repositoryPassword`"))
    elif "repositoryPassword" in secrets:
        issues.append(ConfigIssue("repositoryPassword", "is set but guest.repositoryUsername is not; set the mirrors' user, or remove the secret"))
    return issues


def _check_host_kinds(cfg: StackConfig, secrets: set[str], by_host: dict[str, list]) -> list[ConfigIssue]:
    """Each host has the block of its kind and none of another's, and its VMs what their backend needs (hypervisors/<kind>/checks.py)."""
    issues: list[ConfigIssue] = []
    for hi, host in enumerate(cfg.hosts):
        own = HYPERVISORS[host.kind].host_issues(hi, host, by_host.get(host.name, []), secrets)
        issues += own
        # another kind's block (hosts[].<kind>), whatever the backends check themselves: a backend added later
        # is refused on the older kinds' hosts without touching their folders (docs/ARCHITECTURE.md)
        for kind in HYPERVISORS:
            key = f"hosts[{hi}].{kind}"
            if kind != host.kind and getattr(host, kind, None) is not None and all(i.path != key for i in own):
                issues.append(ConfigIssue(key, f"only for kind {kind} (hosts[{hi}].kind is {host.kind}); set hosts[{hi}].kind: {kind} or remove this block"))
    for backend in HYPERVISORS.values():
        issues += backend.stack_issues(cfg, secrets, by_host)
    index = {h.name: i for i, h in enumerate(cfg.hosts)}
    for host_name, vms in by_host.items():
        host = cfg.hosts[index[host_name]]
        backend = HYPERVISORS[host.kind]
        for vi, vm in vms:
            issues += _check_vm_firmware(backend, vi, vm)
            issues += backend.vm_issues(index[host_name], host, vi, vm)
    return issues


def _check_vm_firmware(backend, vi, vm) -> list[ConfigIssue]:
    """vms[].firmware, the same rules for every backend that lets the VM choose (Hypervisor.firmware_issues None)."""
    own = backend.firmware_issues(vi, vm)
    if own is not None:
        return own
    issues = []
    key = f"vms[{vi}].firmware"
    fw = vm.firmware
    if fw.type != "efi" and vm.gpus:
        issues.append(ConfigIssue(f"{key}.type", f"{fw.type} with GPUs: seed 001 warns that the OS may not install or the passed-through GPU is not seen; use efi"))
    if fw.secure_boot and vm.gpus and not fw.allow_secure_boot_with_gpus:
        issues.append(ConfigIssue(f"{key}.secureBoot", "Secure Boot with GPUs stops the unsigned NVIDIA modules from loading (seed 000: black screen); "
                                                       f"set false, or {key}.allowSecureBootWithGpus: true"))
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
            issues.append(ConfigIssue("guest.nvidia.runfileUrl", "guest.nvidia.installMethod runfile needs the URL (or mirror path) of NVIDIA-Linux-x86_64-<version>.run"))
        if g.registry_username and "registryPassword" not in secrets:
            issues.append(ConfigIssue("registryPassword", "guest.registryUsername is set; set the password with `pulumi config set --secret gpu-stack:registryPassword`"))
        issues += _credential_issues(cfg, secrets)
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
            issues.append(ConfigIssue("guest.containerRuntime.name", f"Kubernetes {k.version} (kubernetes.version) has no dockershim (removed in 1.24); "
                                                                     "use containerd, or Kubernetes <= 1.23 as in seed 001"))
        if k.mode in ("init", "join") and cfg.vms and k.package_repository is None and version_tuple(k.version)[:2] < (1, 24):
            issues.append(ConfigIssue("kubernetes.packageRepository", f"Kubernetes {k.version} is older than the community repository pkgs.k8s.io, "
                                                                      "which starts at v1.24 (the old apt.kubernetes.io and yum.kubernetes.io "
                                                                      "repositories are gone); set the base URL of a mirror that carries kubeadm, "
                                                                      f"kubelet and kubectl {k.version}, laid out like "
                                                                      "pkgs.k8s.io/core:/stable:/v<minor> (deb/ and rpm/ below it)"))
        blocking = [t for t in k.node_taints if t.effect in ("NoSchedule", "NoExecute")]
        if k.mode == "init" and blocking:
            issues.append(ConfigIssue("kubernetes.nodeTaints", "in mode init every node of the cluster is one of these GPU VMs, so "
                                                               f"{blocking[0].key}:{blocking[0].effect} on all of them leaves CoreDNS, Prometheus and "
                                                               "every pod without the toleration Pending; set nodeTaints: [], or join the VMs to a "
                                                               "cluster that has other nodes (mode join)"))
        if k.mode == "existing" and "kubeconfig" not in secrets:
            issues.append(ConfigIssue("kubeconfig", "kubernetes.mode existing needs the cluster's kubeconfig; set it with `pulumi config set --secret gpu-stack:kubeconfig < kubeconfig`"))
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
        issues.append(ConfigIssue("addons.devicePlugin.enabled", "the standalone device plugin and the GPU Operator's device plugin "
                                                                 "(addons.gpuOperator.enabled) would both run and fight over nvidia.com/gpu; disable "
                                                                 "one (addons.gpuOperator.devicePluginEnabled: false)"))
    if dp.enabled:
        for suffix, message in device_plugin_problems(dp.version, cfg.kubernetes.version, mig=dp.mig_strategy != "none", time_slicing=dp.time_slicing is not None):
            issues.append(ConfigIssue(f"addons.devicePlugin.{suffix}", f"{message} (kubernetes.version {cfg.kubernetes.version})"))
        if dp.time_slicing is not None and dp.mig_strategy == "mixed":
            issues.append(ConfigIssue("addons.devicePlugin.timeSlicing", "time-slicing with addons.devicePlugin.migStrategy mixed is not supported by the device plugin; use single or none"))
    if op.enabled:
        guest_os = f"{cfg.guest.os.family} {cfg.guest.os.version}" if cfg.guest is not None else None
        for message in gpu_operator_problems(op.version, cfg.kubernetes.version, guest_os):
            issues.append(ConfigIssue("addons.gpuOperator.version", f"{message} (kubernetes.version {cfg.kubernetes.version})"))
    if not dp.enabled and not (op.enabled and op.device_plugin_enabled) and cfg.vms:
        issues.append(ConfigIssue("addons", "no device plugin is enabled, so nvidia.com/gpu will never be allocatable; set "
                                            "addons.devicePlugin.enabled, or addons.gpuOperator.enabled with addons.gpuOperator.devicePluginEnabled"))
    if cfg.kubernetes.mode == "join" and any_addon and "kubeconfig" not in secrets:
        issues.append(ConfigIssue("kubeconfig", "mode join deploys the add-ons into a cluster this stack did not create; set its kubeconfig with "
                                                "`pulumi config set --secret gpu-stack:kubeconfig < kubeconfig`"))
    if a.monitoring.enabled and "grafanaAdminPassword" not in secrets:
        issues.append(ConfigIssue("grafanaAdminPassword", "monitoring is enabled (addons.monitoring.enabled); set the Grafana admin password with "
                                                          "`pulumi config set --secret gpu-stack:grafanaAdminPassword`"))
    if a.monitoring.enabled and a.monitoring.drift_check.enabled and version_tuple(cfg.kubernetes.version)[:2] < KUBECTL_IMAGE_SINCE:
        since = ".".join(map(str, KUBECTL_IMAGE_SINCE))
        issues.append(ConfigIssue("addons.monitoring.driftCheck.enabled", f"the drift check's kubectl sidecar follows kubernetes.version "
                                                                          f"{cfg.kubernetes.version}, and registry.k8s.io/kubectl exists from {since} on "
                                                                          f"(render/drift_check.py); use false, or a cluster at {since} or newer"))
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
        issues.append(ConfigIssue(f"addons.images.overrides[{key!r}]", "the Tigera operator takes one registry and path for all Calico images; "
                                                                       f"override {CALICO_UPSTREAM}/node (the others follow it), not {key}"))
        return issues
    path = node.rsplit("/", 1)[0]
    for key, value in sorted(calico.items()):
        name = key.rsplit("/", 1)[1]
        if value != f"{path}/{name}":
            issues.append(ConfigIssue(f"addons.images.overrides[{key!r}]", f"{value!r}: the Tigera operator pulls every Calico image as "
                                                                           f"<registry>/<path>/<upstream name>; with {CALICO_UPSTREAM}/node at {node!r} "
                                                                           f"this image must be {path}/{name}"))
    return issues


def _check_kernel_modules(cfg: StackConfig) -> list[ConfigIssue]:
    """guest.nvidia.kernelModules against each VM's GPU architectures (config/catalog.py)."""
    if cfg.guest is None:
        return []
    nv = cfg.guest.nvidia
    key = "guest.nvidia.kernelModules"
    branch = int(nv.driver_version.split(".")[0])
    issues = []
    for vi, vm in enumerate(cfg.vms):
        archs = {GPU_MODELS[g.model].architecture for g in vm.gpus}
        for gi, g in enumerate(vm.gpus):
            arch = GPU_MODELS[g.model].architecture
            where = f"vms[{vi}].gpus[{gi}] ({g.model}, {arch.capitalize()})"
            if nv.kernel_modules == "open" and arch in PROPRIETARY_ONLY:
                issues.append(ConfigIssue(key, f"open kernel modules cannot drive {where}: they need the GSP, first in Turing; use proprietary (or unset it)"))
            if nv.kernel_modules == "proprietary" and arch in OPEN_ONLY:
                issues.append(ConfigIssue(key, f"{where} runs only with the open kernel modules; NVIDIA does not support the proprietary ones on Blackwell; use open (or unset it)"))
        resolved = nv.kernel_modules or default_kernel_modules(archs)
        if resolved is None:
            issues.append(ConfigIssue(f"vms[{vi}].gpus", f"VM {vm.name} mixes GPUs that need the proprietary kernel modules "
                                                         f"({', '.join(sorted(archs & PROPRIETARY_ONLY))}) with GPUs that need the open ones "
                                                         f"({', '.join(sorted(archs & OPEN_ONLY))}); no driver runs both, put them in separate VMs"))
        elif resolved == "open" and branch < OPEN_MODULES_SINCE_BRANCH and vm.gpus:
            issues.append(ConfigIssue("guest.nvidia.driverVersion", f"driver {nv.driver_version} has no open kernel modules (they start with branch "
                                                                    f"{OPEN_MODULES_SINCE_BRANCH}), which VM {vm.name} uses ({key}: "
                                                                    f"{nv.kernel_modules or 'default for its GPUs'}); use a newer driver or set {key}: "
                                                                    "proprietary"))
    return issues


def _check_driver_branch(cfg: StackConfig) -> list[ConfigIssue]:
    """guest.nvidia.driverVersion against the last branch each configured GPU's architecture has (config/support.py)."""
    if cfg.guest is None:
        return []
    version = cfg.guest.nvidia.driver_version
    issues, seen = [], set()
    for vi, vm in enumerate(cfg.vms):
        for gi, g in enumerate(vm.gpus):
            arch = GPU_MODELS[g.model].architecture
            problem = support.last_branch_problem(version, arch)
            if problem is None or arch in seen:
                continue
            seen.add(arch)
            last, source = problem
            issues.append(ConfigIssue("guest.nvidia.driverVersion", (
                f"driver {version} (branch {support.driver_branch(version)}) does not support the {g.model} at vms[{vi}].gpus[{gi}] "
                f"({arch.capitalize()}): the last branch that supports {arch.capitalize()} is {last} ({source}); pin a {last} driver")))
    return issues


def _check_hypervisor_versions(hi, host, vms) -> list[ConfigIssue]:
    """hosts[].libvirtVersion / qemuVersion against what each VM's domain XML uses (render/hypervisor.py)."""
    issues = []
    for vi, vm in vms:
        for key, problem in version_problems(domain_elements(vm, host), host.libvirt_version, host.qemu_version):
            issues.append(ConfigIssue(f"hosts[{hi}].{key}", f"host {host.name}, VM {vm.name}: {problem}"))
    return issues


def config_warnings(cfg: StackConfig, today: date | None = None) -> list[ConfigIssue]:
    """What is accepted but worth a word; the program logs each (pulumi.log.warn), `make plan` prints each.

    `today` (default: the real date) decides which support ends are past or near (config/support.py); these lines
    go to the terminal and the engine's log only, never into the plan's files."""
    today = today or date.today()
    warnings = []
    if cfg.kubernetes is not None:
        message = kubernetes_version_warning(cfg.kubernetes.version)
        if message:
            warnings.append(ConfigIssue("kubernetes.version", message))
        k = cfg.kubernetes
        message = support.status_sentence(f"Kubernetes {k.version}", support.kubernetes_status(k.version, today), today)
        if message:
            if k.past_end_of_support:
                message += f"; kept on purpose (kubernetes.pastEndOfSupport: {k.past_end_of_support})"
            else:
                message += "; move to a supported minor (or say why not in kubernetes.pastEndOfSupport)"
            warnings.append(ConfigIssue("kubernetes.version", message))
    if cfg.guest is not None:
        version = cfg.guest.nvidia.driver_version
        status = support.driver_status(version, today)
        message = support.status_sentence(f"NVIDIA driver {version} (branch {support.driver_branch(version)})", status, today)
        if message:
            warnings.append(ConfigIssue("guest.nvidia.driverVersion", message + "; supported branches: " + ", ".join(
                f"{r.release} {r.designation} to {r.ends_text}" for b, r in sorted(support.DRIVER_BRANCHES.items())
                if r.ends is None or r.ends >= today)))
    return warnings
