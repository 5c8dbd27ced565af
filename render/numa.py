"""Guest NUMA cells and vCPU pinning derived from the host topology.

Seed 000 had to pin vCPUs in two groups, one per host NUMA node, with each GPU
on the node it hangs off; GPUs reached across the socket interconnect lose
bandwidth. This module turns the declared host topology and each VM's GPUs
into guest cells whose vCPUs are pinned 1:1 to host CPUs of the same node and
whose memory is bound there. VMs on one host get disjoint CPUs, in config
order, so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.models import Host, Vm
from config.errors import ConfigIssue
from config.types import parse_cpu_list, pci_parts


@dataclass(frozen=True)
class Cell:
    guest_id: int
    host_node: int
    vcpus: tuple[int, ...]  # guest vCPU ids
    host_cpus: tuple[int, ...]  # host CPU each vCPU is pinned to, same order
    memory_mib: int


@dataclass(frozen=True)
class Placement:
    cells: tuple[Cell, ...]
    threads: int = 1  # 2: vCPUs 2k and 2k+1 are pinned to the two threads of one host core

    @property
    def host_nodes(self) -> tuple[int, ...]:
        return tuple(sorted({c.host_node for c in self.cells}))


def _spanned_nodes(host: Host, vm: Vm) -> tuple[int, ...]:
    if vm.numa.host_nodes:
        return tuple(sorted(set(vm.numa.host_nodes)))
    # a device on a node the host lacks is reported at its numaNode (stacks/checks.py), not here again
    known = {n.id for n in host.numa_nodes}
    nodes = {d.numa_node for d in (*vm.gpus, *vm.nvswitches) if d.numa_node is not None and d.numa_node in known}
    if nodes:
        return tuple(sorted(nodes))
    return (host.numa_nodes[0].id,)


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def sibling_pairs(host_index: int, host: Host) -> tuple[dict[int, list[tuple[int, int]]], list[ConfigIssue]]:
    """hosts[].threadSiblings as sibling pairs per NUMA node, in CPU order, and the problems with them."""
    key = f"hosts[{host_index}].threadSiblings"
    node_of = {c: n.id for n in host.numa_nodes for c in n.cpu_ids}
    pairs: dict[int, list[tuple[int, int]]] = {}
    seen: set[int] = set()
    issues: list[ConfigIssue] = []
    for i, entry in enumerate(host.thread_siblings):
        cpus = parse_cpu_list(entry)
        if len(cpus) != 2:
            issues.append(ConfigIssue(f"{key}[{i}]", f"{entry!r} lists {len(cpus)} CPUs; each entry is the two hardware threads of one core (SMT2)"))
            continue
        nodes = {node_of.get(c) for c in cpus}
        if None in nodes or len(nodes) != 1:
            issues.append(ConfigIssue(f"{key}[{i}]", f"{entry!r}: both threads must be CPUs of one NUMA node of host {host.name}"))
            continue
        if seen & set(cpus):
            issues.append(ConfigIssue(f"{key}[{i}]", f"{entry!r}: CPU {sorted(seen & set(cpus))} is already in another entry"))
            continue
        seen |= set(cpus)
        pairs.setdefault(nodes.pop(), []).append((cpus[0], cpus[1]))
    return {n: sorted(p) for n, p in pairs.items()}, issues


def place_host(host_index: int, host: Host, vms: list[tuple[int, Vm]]) -> tuple[dict[str, Placement], list[ConfigIssue]]:
    """Placements for the VMs on one host; `vms` pairs each VM with its index in config.

    With hosts[].threadSiblings, unpinned cells take whole cores: vCPUs 2k and 2k+1
    go to the two threads of one core (a core with a reserved thread is skipped),
    so the guest's threads=2 topology matches what runs underneath.
    """
    issues: list[ConfigIssue] = []
    reserved = set(host.reserved_cpu_ids)
    node_by_id = {n.id: n for n in host.numa_nodes}
    free = {n.id: [c for c in n.cpu_ids if c not in reserved] for n in host.numa_nodes}
    pairs, pair_issues = sibling_pairs(host_index, host)
    issues += pair_issues
    smt = bool(host.thread_siblings) and not pair_issues
    sibling = {a: b for p in pairs.values() for a, b in p} | {b: a for p in pairs.values() for a, b in p}
    taken: dict[int, str] = {}
    placements: dict[str, Placement] = {}

    for index, vm in vms:
        key = f"vms[{index}]"
        wanted: list[tuple[int, int, int, tuple[int, ...] | None, str]] = []  # node, vcpus, gib, pins, key
        if vm.numa.cells:
            for ci, cell in enumerate(vm.numa.cells):
                pins = parse_cpu_list(cell.host_cpus) if cell.host_cpus else None
                wanted.append((cell.host_node, cell.vcpus, cell.memory_gib, pins, f"{key}.numa.cells[{ci}]"))
            if sum(c.vcpus for c in vm.numa.cells) != vm.vcpus:
                issues.append(ConfigIssue(f"{key}.numa.cells", f"cells hold {sum(c.vcpus for c in vm.numa.cells)} vCPUs but vcpus is {vm.vcpus}; they must be equal"))
            if sum(c.memory_gib for c in vm.numa.cells) != vm.memory_gib:
                issues.append(ConfigIssue(f"{key}.numa.cells", f"cells hold {sum(c.memory_gib for c in vm.numa.cells)} GiB but memoryGib is "
                                                               f"{vm.memory_gib}; libvirt rewrites memory to the cells' sum, so they must be equal"))
        else:
            nodes = _spanned_nodes(host, vm)
            if len(nodes) > vm.vcpus or len(nodes) > vm.memory_gib:
                issues.append(ConfigIssue(f"{key}.vcpus", f"the VM spans host NUMA nodes {list(nodes)} and needs at least one vCPU and 1 GiB per node"))
                continue
            for node, vcpus, gib in zip(nodes, _split(vm.vcpus, len(nodes)), _split(vm.memory_gib, len(nodes))):
                wanted.append((node, vcpus, gib, None, f"{key}.vcpus"))

        cells: list[Cell] = []
        next_vcpu = 0
        for guest_id, (node, vcpus, gib, pins, cell_key) in enumerate(wanted):
            if node not in node_by_id:
                issues.append(ConfigIssue(f"{cell_key}.hostNode" if vm.numa.cells else f"{key}.numa.hostNodes", f"host {host.name} has no NUMA node {node}; it has {sorted(node_by_id)}"))
                continue
            if pins is not None:
                outside = [c for c in pins if c not in node_by_id[node].cpu_ids]
                if outside:
                    issues.append(ConfigIssue(f"{cell_key}.hostCpus", f"CPUs {outside} are not on host {host.name} NUMA node {node} (its CPUs: {node_by_id[node].cpus})"))
                    continue
                if len(pins) != vcpus:
                    issues.append(ConfigIssue(f"{cell_key}.hostCpus", f"{len(pins)} host CPUs for {vcpus} vCPUs; give exactly one host CPU per vCPU"))
                    continue
                clash = [c for c in pins if c in taken or c in reserved]
                if clash:
                    issues.append(ConfigIssue(f"{cell_key}.hostCpus", f"CPUs {clash} are reserved or already pinned to {sorted({taken.get(c, 'the host') for c in clash})}"))
                    continue
                for c in pins:
                    if c in free[node]:
                        free[node].remove(c)
                host_cpus = tuple(pins)
            elif smt:
                if vcpus % 2:
                    issues.append(ConfigIssue(cell_key, f"{vcpus} vCPUs on host NUMA node {node}: host {host.name} has SMT (threadSiblings), so vCPUs "
                                                        "are pinned as sibling pairs; give an even number per cell"))
                    continue
                whole = [p for p in pairs.get(node, []) if p[0] in free[node] and p[1] in free[node]]
                if len(whole) < vcpus // 2:
                    issues.append(ConfigIssue(cell_key, f"host {host.name} NUMA node {node} has {len(whole)} whole cores (sibling pairs) left, "
                                                        f"{vcpus // 2} needed for {vcpus} vCPUs; lower vcpus or declare more CPUs"))
                    continue
                host_cpus = tuple(c for p in whole[: vcpus // 2] for c in p)
                for c in host_cpus:
                    free[node].remove(c)
            else:
                if len(free[node]) < vcpus:
                    issues.append(ConfigIssue(cell_key, f"host {host.name} NUMA node {node} has {len(free[node])} unpinned CPUs left, {vcpus} needed; lower vcpus or declare more CPUs"))
                    continue
                host_cpus = tuple(free[node][:vcpus])
                del free[node][:vcpus]
            for c in host_cpus:
                taken[c] = vm.name
            cells.append(Cell(guest_id, node, tuple(range(next_vcpu, next_vcpu + vcpus)), host_cpus, gib * 1024))
            next_vcpu += vcpus
        paired = smt and cells and all(
            len(c.host_cpus) % 2 == 0 and all(sibling.get(a) == b for a, b in zip(c.host_cpus[::2], c.host_cpus[1::2]))
            for c in cells
        )
        placements[vm.name] = Placement(tuple(cells), threads=2 if paired else 1)

    return placements, issues



def reserve_by_node(host: Host) -> dict[int, int]:
    """Where hosts[].reservedMemoryGib is spent, in GiB per node: on the nodes of hosts[].reservedCpus,
    where the host's housekeeping runs and (the kernel's default local allocation) allocates its memory;
    without reserved CPUs, over all nodes. Split evenly, the first nodes taking the remainder."""
    reserved = set(host.reserved_cpu_ids)
    nodes = [n.id for n in host.numa_nodes if reserved & set(n.cpu_ids)] or [n.id for n in host.numa_nodes]
    return dict(zip(nodes, _split(host.reserved_memory_gib, len(nodes))))


def node_takes(vms, placements: dict[str, Placement], which=lambda vm: True) -> dict[int, list[tuple[str, int]]]:
    """(VM name, GiB) each VM (those `which` selects) binds to each host node, in config order."""
    takes: dict[int, list[tuple[str, int]]] = {}
    for _, vm in vms:
        if vm.name not in placements or not which(vm):
            continue
        for c in placements[vm.name].cells:
            row = takes.setdefault(c.host_node, [])
            if row and row[-1][0] == vm.name:
                row[-1] = (vm.name, row[-1][1] + c.memory_mib // 1024)
            else:
                row.append((vm.name, c.memory_mib // 1024))
    return takes


def node_memory_issues(host_index: int, host: Host, vms, placements: dict[str, Placement]) -> list[ConfigIssue]:
    """Memory per host NUMA node across all VMs of the host. Every cell is bound strict (numatune memnode
    mode strict, hypervisors/libvirt/domain_xslt.py), with 1 GiB hugepages or without: QEMU takes a cell's memory from
    its node only, so the VMs must fit each node, less the host's reserve where it is spent."""
    issues = []
    reserve = reserve_by_node(host)
    node_by_id = {n.id: (i, n) for i, n in enumerate(host.numa_nodes)}
    for node, by_vm in sorted(node_takes(vms, placements).items()):
        if node not in node_by_id:
            continue
        ni, n = node_by_id[node]
        used = sum(gib for _, gib in by_vm)
        left = n.memory_gib - reserve.get(node, 0)
        if used > left:
            each = ", ".join(f"{name} {gib} GiB" for name, gib in by_vm)
            huge = " (1 GiB hugepages)" if any(vm.numa.hugepages_1g for _, vm in vms if vm.name in dict(by_vm)) else ""
            issues.append(ConfigIssue(f"hosts[{host_index}].numaNodes", f"host {host.name} NUMA node {node}: VMs bind {used} GiB there{huge} ({each}); "
                                                                      f"it has {n.memory_gib} GiB (hosts[{host_index}].numaNodes[{ni}].memoryGib), {reserve.get(node, 0)} GiB of it the host's reserve "
                                                                      f"(hosts[{host_index}].reservedMemoryGib), so {left} GiB is left for VMs, {used - left} GiB short"))
    return issues


def device_cells(vm_index: int, vm: Vm, placement: Placement) -> tuple[dict[str, int], list[ConfigIssue]]:
    """Guest cell of each passed-through device: the cell on the device's host node."""
    cell_of_node: dict[int, int] = {}
    for c in placement.cells:
        cell_of_node.setdefault(c.host_node, c.guest_id)
    out: dict[str, int] = {}
    issues: list[ConfigIssue] = []
    for kind, devices in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
        for i, dev in enumerate(devices):
            node = dev.numa_node if dev.numa_node is not None else (placement.cells[0].host_node if placement.cells else 0)
            if node not in cell_of_node:
                issues.append(ConfigIssue(
                    f"vms[{vm_index}].{kind}[{i}].numaNode",
                    f"exposeGpuAffinity needs a guest cell on host node {node}, but the VM spans nodes {list(placement.host_nodes)}",
                ))
                continue
            out[dev.address] = cell_of_node[node]
    return out, issues


def affinity_groups(cells_of: dict[str, int], hostdevs: tuple[str, ...]) -> tuple[tuple[int, tuple[tuple[str, ...], ...]], ...]:
    """(guest cell, devices) per cell in cell order; each device lists its functions, function 0 first.

    Extra functions (a GPU's audio) follow the configured device they belong to.
    """
    by_device: dict[tuple[int, int, int], list[str]] = {}
    for address in hostdevs:
        by_device.setdefault(pci_parts(address)[:3], []).append(address)
    groups: dict[int, list[tuple[str, ...]]] = {}
    for address, cell in cells_of.items():
        functions = tuple(sorted(by_device[pci_parts(address)[:3]], key=lambda a: pci_parts(a)[3]))
        groups.setdefault(cell, []).append(functions)
    return tuple((cell, tuple(groups[cell])) for cell in sorted(groups))


def guest_topology(placement: Placement) -> tuple[int, int, int]:
    """(sockets, cores per socket, threads per core) consistent with the guest NUMA cells.

    Without it QEMU presents every vCPU as a one-core socket (64 sockets for 64 vCPUs).
    One socket per cell when the cells are the same size, so no socket spans two
    NUMA nodes; otherwise one socket holding every core. threads is 2 only when the
    vCPUs are pinned as SMT sibling pairs (render/numa.py), so the guest scheduler's
    idea of which vCPUs share a core is true on the host. libvirt requires
    sockets*dies*cores*threads to equal the vCPU count (formatdomain, CPU model and topology).
    One rule for every backend that places the VM: libvirt's <topology>, vSphere's
    numCoresPerSocket (hypervisors/vsphere/render.py).
    """
    cells = placement.cells
    total = sum(len(c.vcpus) for c in cells)
    threads = placement.threads
    sizes = {len(c.vcpus) for c in cells}
    sockets = len(cells) if len(sizes) == 1 else 1
    cores = total // sockets // threads
    return sockets, cores, threads
