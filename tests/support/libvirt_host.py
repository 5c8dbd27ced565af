"""A real libvirtd for the validator tests: define, read back, boot under TCG.

The machine running the tests has no /dev/kvm, one NUMA node and two CPUs,
so a domain is adapted before it is started (never before it is validated
or defined as `kvm` where KVM exists): type qemu, a qemu64 CPU with the
phys-bits the host would pass through, hostdevs, disks and NICs removed,
vCPUs one per guest cell pinned onto the local CPUs, memory scaled down,
host nodes mapped onto node 0. The 64-bit hole, phys-bits and the guest NUMA
shape are kept; those are what QEMU can refuse.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from lxml import etree

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
URI = "qemu:///system"


def virsh(*args: str, check: bool = True, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=timeout)


def kvm_available() -> bool:
    return os.path.exists("/dev/kvm")


def for_this_machine(xml: str) -> str:
    """Same document; type qemu where there is no KVM, and a unique name and UUID.

    The plan's <uuid> is derived from project, stack and VM name, so two test
    runs against one libvirtd would otherwise define one UUID under two names,
    which libvirt refuses ("already defined with uuid").
    """
    doc = etree.fromstring(xml.encode())
    if not kvm_available():
        doc.set("type", "qemu")
    doc.find("name").text = f"gst-{uuid.uuid4().hex[:10]}"
    if doc.find("uuid") is not None:
        doc.find("uuid").text = str(uuid.uuid4())
    return etree.tostring(doc, encoding="unicode")


def for_tcg_boot(xml: str, phys_bits: int, cell_mib: int = 256) -> str:
    doc = etree.fromstring(for_this_machine(xml).encode())
    doc.set("type", "qemu")
    devices = doc.find("devices")
    for tag in ("hostdev", "disk", "interface"):
        for el in devices.findall(tag):
            devices.remove(el)
    backing = doc.find("memoryBacking")
    if backing is not None:
        doc.remove(backing)
    cpu = doc.find("cpu")
    cells = cpu.findall("numa/cell")
    cpu.attrib.clear()
    cpu.set("mode", "custom")
    cpu.set("match", "exact")
    for child in list(cpu):
        if child.tag != "numa":
            cpu.remove(child)
    model = etree.Element("model", fallback="allow")
    model.text = "qemu64"
    cpu.insert(0, model)
    cpu.insert(1, etree.Element("maxphysaddr", mode="emulate", bits=str(phys_bits)))
    ncpu = os.cpu_count() or 1
    for i, cell in enumerate(cells):
        cell.set("cpus", str(i))
        cell.set("memory", str(cell_mib))
        cell.set("unit", "MiB")
    total = cell_mib * len(cells)
    doc.find("vcpu").text = str(len(cells))
    doc.find("memory").set("unit", "MiB")
    doc.find("memory").text = str(total)
    cputune = doc.find("cputune")
    for el in list(cputune):
        cputune.remove(el)
    for i in range(len(cells)):
        etree.SubElement(cputune, "vcpupin", vcpu=str(i), cpuset=str(i % ncpu))
    numatune = doc.find("numatune")
    for el in numatune:
        el.set("nodeset", "0")
    return etree.tostring(doc, encoding="unicode")


class Domain:
    """Define on enter, undefine (with NVRAM) on exit."""

    def __init__(self, xml: str, tmp: Path):
        self.xml = xml
        self.path = tmp / "domain.xml"
        self.name = etree.fromstring(xml.encode()).findtext("name")

    def __enter__(self) -> "Domain":
        self.path.write_text(self.xml)
        virsh("define", str(self.path))
        return self

    def dumpxml(self) -> etree._Element:
        return etree.fromstring(virsh("dumpxml", self.name).stdout.encode())

    def start(self) -> None:
        virsh("start", self.name)

    def hmp(self, command: str) -> str:
        return virsh("qemu-monitor-command", self.name, "--hmp", command).stdout

    def qmp(self, command: str) -> str:
        return virsh("qemu-monitor-command", self.name, command).stdout

    def wait_for(self, predicate, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(1)
        return False

    def __exit__(self, *exc) -> None:
        virsh("destroy", self.name, check=False)
        virsh("undefine", "--nvram", self.name, check=False)
