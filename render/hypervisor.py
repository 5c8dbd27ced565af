"""The libvirt and QEMU versions the generated domain XML needs, as pure functions of versions.

Each element render/domain_xslt.py can emit, with the first libvirt (and, where
it matters, QEMU) release that accepts it and the source. A host that declares
an older version (hosts[].libvirtVersion / qemuVersion) is refused at preview,
naming the host and the element, instead of libvirt dropping or rejecting the
element at `pulumi up`. The versions come from config today; the host-facts
JSON (render/host_facts.py, another branch) can feed the same function later.

Sources: libvirt docs/formatdomain.rst (the ":since:" notes), read at libvirt
commit 64e98bd8 (2026); the expander-bus minimum from the Controllers section as
quoted by a translation of that page; the QEMU minimum for host-phys-bits from
docs/FIELD-FACTS.md (not re-verified).
"""

from __future__ import annotations

from dataclasses import dataclass

from stacks.config import Host, Vm


@dataclass(frozen=True)
class Minimum:
    element: str
    libvirt: tuple[int, ...]
    qemu: tuple[int, ...] | None
    source: str


MINIMUMS: dict[str, Minimum] = {m.element: m for m in (
    Minimum("cpu/maxphysaddr", (8, 7, 0), (2, 7, 0),
            "formatdomain.rst: maxphysaddr 'Since 8.7.0'; QEMU 2.7 for host-phys-bits is from FIELD-FACTS.md, not re-read in QEMU's changelog"),
    Minimum("cpu/maxphysaddr[@mode='emulate']/@bits", (8, 7, 0), (2, 7, 0),
            "formatdomain.rst: maxphysaddr emulate with bits 'Since 8.7.0' (bits optional only since 9.2.0)"),
    Minimum("controller[@model='pcie-expander-bus']/target/node", (1, 3, 4), None,
            "formatdomain.rst, Controllers: pci-expander-bus and pcie-expander-bus 'since 1.3.4' (NUMA node of the expander)"),
    Minimum("cpu/numa/cell", (0, 9, 8), None, "formatdomain.rst: guest NUMA topology 'Since 0.9.8'"),
    Minimum("numatune/memnode", (1, 2, 7), None, "formatdomain.rst, NUMA Node Tuning: memnode 'Since 1.2.7'"),
    Minimum("cpu/topology", (0, 7, 5), None, "formatdomain.rst: CPU model and topology 'Since 0.7.5'"),
    Minimum("iothreads", (1, 2, 8), None, "formatdomain.rst: IOThreads Allocation 'Since 1.2.8'"),
    Minimum("cputune/iothreadpin", (1, 2, 9), None, "formatdomain.rst: iothreadpin 'Since 1.2.9'"),
    Minimum("memoryBacking/hugepages/page", (1, 2, 5), None, "formatdomain.rst, Memory Backing: hugepages page size 'Since 1.2.5'"),
)}


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def domain_elements(vm: Vm, host: Host) -> list[str]:
    """The MINIMUMS elements the domain of `vm` on `host` uses (mirrors render/domain_xslt.py)."""
    elements = ["cpu/maxphysaddr", "cpu/numa/cell", "numatune/memnode", "cpu/topology"]
    if vm.numa.expose_gpu_affinity:
        elements.append("controller[@model='pcie-expander-bus']/target/node")
    if host.reserved_cpus:
        elements += ["iothreads", "cputune/iothreadpin"]
    if vm.numa.hugepages_1g:
        elements.append("memoryBacking/hugepages/page")
    return elements


def version_problems(elements: list[str], libvirt_version: str | None, qemu_version: str | None) -> list[str]:
    """One sentence per element the declared versions lack; unknown versions are not checked."""
    problems = []
    for element in elements:
        m = MINIMUMS[element]
        if libvirt_version is not None and parse_version(libvirt_version) < m.libvirt:
            problems.append(f"<{element}> needs libvirt {_fmt(m.libvirt)} or later, the host has {libvirt_version} ({m.source})")
        if qemu_version is not None and m.qemu is not None and parse_version(qemu_version) < m.qemu:
            problems.append(f"<{element}> needs QEMU {_fmt(m.qemu)} or later, the host has {qemu_version} ({m.source})")
    return problems


def minimum_versions(elements: list[str]) -> tuple[str, str]:
    """(libvirt, QEMU) the elements need together, for docs and error messages."""
    lib = max(MINIMUMS[e].libvirt for e in elements)
    qemu = max((MINIMUMS[e].qemu for e in elements if MINIMUMS[e].qemu), default=(0,))
    return _fmt(lib), _fmt(qemu)


def smt_undeclared(host_index: int, host: Host, threads_per_core: int | None) -> str | None:
    """A warning when libvirt reports SMT (getNodeInfo cpu_threads_per_core > 1) but hosts[].threadSiblings is empty."""
    if host.thread_siblings or not threads_per_core or threads_per_core < 2:
        return None
    return (
        f"gpu-stack:hosts[{host_index}].threadSiblings: host {host.name} reports {threads_per_core} threads per core, but no "
        "sibling list is declared, so vCPUs are pinned without pairing and the guest sees threads=1. Declare the pairs "
        "(sort -u /sys/devices/system/cpu/cpu*/topology/thread_siblings_list) to pin SMT siblings together"
    )
