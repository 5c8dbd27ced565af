"""The libvirt and QEMU versions the generated domain XML needs, as pure functions of versions.

Each element hypervisors/libvirt/domain_xslt.py emits, with the first libvirt (and, where
it matters, QEMU) release that accepts it and the source. A host that declares
an older version (hosts[].libvirtVersion / qemuVersion), or whose host facts
record one (facts/host_facts.py), is refused at preview, naming the host and
the element, instead of libvirt dropping or rejecting the element at
`pulumi up`. An element that is only emitted for some VMs (expander buses,
I/O threads, hugepages, kvm hidden, the 64-bit hole) is only checked for them:
domain_elements() mirrors the conditions in hypervisors/libvirt/domain_xslt.py and
hypervisors/libvirt/machine.py domain_spec().

Sources, verified 2026-12-02 (docs/SOURCES.md, "Domain elements"):
- libvirt docs/formatdomain.rst at commit 64e98bd85307 (the ":since:" notes),
  quoted in each source string below;
- libvirt NEWS.rst (v6.1.0 for `dies`, v8.7.0 for the QEMU floor);
- QEMU minimums from libvirt's recorded QEMU probes,
  tests/qemucapabilitiesdata/caps_<version>.x86_64.xml: the first recorded
  release that has the capability flag, the one before it lacks it;
- libvirt 9.0.0 and QEMU 7.2 on the test machine: `virsh domxml-to-native`
  turns <maxphysaddr mode='passthrough'/> into `-cpu ...,host-phys-bits=on`,
  dies into `-smp ...,dies=1`, and the expander into
  `-device pxb-pcie,...,numa_node=N`; `qemu-system-x86_64 -device
  q35-pcihost,help` lists `pci-hole64-size`.
The QEMU minimum of maxphysaddr is libvirt 8.7.0's own floor, QEMU 4.2 (NEWS.rst
v8.7.0 "Remove support for QEMU < 4.2"), which is above every other QEMU minimum
here; when QEMU itself got host-phys-bits (2.7.0 per docs/FIELD-FACTS.md) was
not verified, QEMU's git history was not available here, and does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from render.mmio import hole64_gib
from render.vm_plan import hides_hypervisor
from config.models import Host, Vm
from config.types import version_key


@dataclass(frozen=True)
class Minimum:
    element: str
    libvirt: tuple[int, ...] | None
    """First libvirt release that accepts the element; None where libvirt's docs state none."""
    qemu: tuple[int, ...] | None
    """First QEMU release with what libvirt turns the element into; None where it does not matter."""
    source: str


MAXPHYSADDR = "cpu/maxphysaddr"
EXPANDER = "controller[@model='pcie-expander-bus']/target/node"

MINIMUMS: dict[str, Minimum] = {m.element: m for m in (
    # always emitted
    Minimum(MAXPHYSADDR, (8, 7, 0), (4, 2, 0),
            "formatdomain.rst: 'Since 8.7.0 the maxphysaddr element'; libvirt NEWS.rst v8.7.0, the same release: "
            "'qemu: Remove support for QEMU < 4.2', so no libvirt that accepts maxphysaddr runs an older QEMU. "
            "libvirt turns mode='passthrough' into -cpu host-phys-bits=on (virsh domxml-to-native, libvirt 9.0)"),
    Minimum("cpu/maxphysaddr[@mode='emulate']/@bits", (8, 7, 0), (4, 2, 0),
            "formatdomain.rst: maxphysaddr 'Since 8.7.0', emulate with bits (bits optional only 'since 9.2.0'); "
            "libvirt 8.7.0 supports QEMU 4.2 and later only (NEWS.rst v8.7.0)"),
    Minimum("cpu/topology/@dies", (6, 1, 0), None,
            "libvirt NEWS.rst v6.1.0: 'qemu: Support \"dies\" in CPU topology'; the topology element itself "
            "'Since 0.7.5' (formatdomain.rst). dies='1' is the default, no QEMU minimum"),
    Minimum("cpu/numa/cell", (1, 2, 11), None,
            "formatdomain.rst: guest NUMA topology 'Since 0.9.8', cell id 'Since 1.2.7', "
            "'Since 1.2.11 one can use an additional unit attribute' (we write unit='MiB')"),
    Minimum("cputune/vcpupin", (0, 9, 0), None, "formatdomain.rst, CPU Tuning: vcpupin 'QEMU driver support since 0.9.0'"),
    Minimum("cputune/emulatorpin", (0, 10, 0), None,
            "formatdomain.rst states no version for emulatorpin; 0.10.0 is that of its siblings "
            "emulator_period/emulator_quota ('Only QEMU driver support since 0.10.0')"),
    Minimum("numatune/memory", (0, 9, 3), None, "formatdomain.rst, NUMA Node Tuning: numatune and memory 'Since 0.9.3'"),
    Minimum("numatune/memnode", (1, 2, 7), None, "formatdomain.rst, NUMA Node Tuning: memnode 'QEMU Since 1.2.7'"),
    Minimum("memballoon[@model='none']", (0, 8, 4), None,
            "formatdomain.rst, Memory balloon device: 'since 0.8.4, if the memballoon device needs to be explicitly "
            "disabled, model='none' may be used'"),
    Minimum("disk[@device='cdrom']/target[@bus='sata']", (0, 9, 7), None,
            "formatdomain.rst, disk target: '\"sata\" attribute value since 0.9.7'"),
    # only for some VMs
    Minimum("hostdev[@type='pci'][@managed='yes']/driver[@name='vfio']", (1, 0, 5), (1, 3, 0),
            "formatdomain.rst: PCI hostdev 'since 0.6.0'; driver name vfio 'Since 1.0.5 (QEMU and KVM only, requires "
            "kernel 3.6 or newer)'; QEMU vfio-pci: libvirt caps_1.3.1 has it, caps_1.2.2 lacks it"),
    Minimum(EXPANDER, (1, 3, 4), (2, 6, 0),
            "formatdomain.rst, Controllers: 'pci-expander-bus, pcie-expander-bus (since 1.3.4)', target/node for "
            "pcie-expander-bus on q35; QEMU pxb-pcie: libvirt caps_2.6.0 has it, caps_2.5.0 lacks it"),
    Minimum("controller[@model='pcie-root-port']", (1, 2, 19), None,
            "formatdomain.rst, Controllers: 'pcie-root-port ... (since 1.2.19)'"),
    Minimum("iothreads", (1, 2, 8), None, "formatdomain.rst: IOThreads Allocation 'Since 1.2.8 (QEMU only)'"),
    Minimum("cputune/iothreadpin", (1, 2, 9), None, "formatdomain.rst, CPU Tuning: iothreadpin 'Since 1.2.9'"),
    Minimum("disk/driver/@iothread", (1, 2, 8), (2, 1, 0),
            "formatdomain.rst, disk driver: the iothread attribute 'Since 1.2.8 (QEMU 2.1)'"),
    Minimum("memoryBacking/hugepages/page", (1, 2, 5), None,
            "formatdomain.rst, Memory Backing: 'Since 1.2.5 ... The page element is introduced'"),
    Minimum("features/kvm/hidden", (1, 2, 8), (2, 1, 0),
            "formatdomain.rst, Hypervisor features, kvm: hidden 'since 1.2.8 (QEMU 2.1.0)'"),
    Minimum("qemu:commandline -global q35-pcihost.pci-hole64-size", None, (1, 6, 0),
            "drvqemu.rst 'Pass-through of arbitrary qemu commands' states no libvirt version; QEMU property "
            "q35-pcihost.pci-hole64-size: libvirt caps_1.6.0 has q35-pci-hole64-size, caps_1.5.3 lacks it"),
)}


def _at_least(version: str, minimum: tuple[int, ...]) -> bool:
    return version_key(version) >= version_key(minimum)


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def domain_elements(vm: Vm, host: Host) -> list[str]:
    """The MINIMUMS elements the domain of `vm` on `host` uses (mirrors hypervisors/libvirt/domain_xslt.py and domain_spec)."""
    elements = [
        MAXPHYSADDR, "cpu/topology/@dies", "cpu/numa/cell", "cputune/vcpupin", "cputune/emulatorpin",
        "numatune/memory", "numatune/memnode", "memballoon[@model='none']", "disk[@device='cdrom']/target[@bus='sata']",
    ]
    passes_through = bool(vm.gpus or vm.nvswitches)
    if passes_through:
        elements.append("hostdev[@type='pci'][@managed='yes']/driver[@name='vfio']")
    if vm.numa.expose_gpu_affinity and passes_through:
        elements += [EXPANDER, "controller[@model='pcie-root-port']"]
    if host.reserved_cpus:
        elements += ["iothreads", "cputune/iothreadpin", "disk/driver/@iothread"]
    if vm.numa.hugepages_1g:
        elements.append("memoryBacking/hugepages/page")
    if hides_hypervisor(vm):
        elements.append("features/kvm/hidden")
    if hole64_gib(vm):
        elements.append("qemu:commandline -global q35-pcihost.pci-hole64-size")
    return elements


def version_problems(elements: list[str], libvirt_version: str | None, qemu_version: str | None) -> list[tuple[str, str]]:
    """(the hosts[] key, a sentence) per element the versions lack: libvirtVersion or qemuVersion; unknown versions are not checked."""
    problems = []
    for element in elements:
        m = MINIMUMS[element]
        if libvirt_version is not None and m.libvirt is not None and not _at_least(libvirt_version, m.libvirt):
            problems.append(("libvirtVersion", f"<{element}> needs libvirt {_fmt(m.libvirt)} or later, the host has {libvirt_version} ({m.source})"))
        if qemu_version is not None and m.qemu is not None and not _at_least(qemu_version, m.qemu):
            problems.append(("qemuVersion", f"<{element}> needs QEMU {_fmt(m.qemu)} or later, the host has {qemu_version} ({m.source})"))
    return problems


def smt_undeclared(host_index: int, host: Host, threads_per_core: int | None) -> str | None:
    """A warning when libvirt reports SMT (getNodeInfo cpu_threads_per_core > 1) but hosts[].threadSiblings is empty."""
    if host.thread_siblings or not threads_per_core or threads_per_core < 2:
        return None
    return (
        f"gpu-stack:hosts[{host_index}].threadSiblings: host {host.name} reports {threads_per_core} threads per core, but no "
        "sibling list is declared, so vCPUs are pinned without pairing and the guest sees threads=1. Declare the pairs "
        "(sort -u /sys/devices/system/cpu/cpu*/topology/thread_siblings_list) to pin SMT siblings together"
    )
