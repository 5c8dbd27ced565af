"""The PCIe topology limits of hypervisors/libvirt/domain_xslt.py, checked by libvirt and QEMU.

At each limit the domain the program renders passes virt-xml-validate and
`virsh define`; with exposeGpuAffinity it also boots under TCG and the
firmware numbers every expander's root ports up to bus 255. One past the
pcie-root limit, libvirt itself refuses the domain: the config check
(tests/test_bad_input.py) refuses it first.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from lxml import etree

from hypervisors.libvirt.domain_xslt import MAX_BUS, MAX_EXPANDERS, MAX_PORTS_PER_EXPANDER, MAX_ROOT_HOSTDEVS
from tests.conftest import missing_validator, require_tool, run_stack
from tests.test_bad_input import _many_devices_raw
from hypervisors.libvirt.plan_files import domain_files


def domain_xml(raw: dict) -> str:
    """The domain XML the plan shows for this config."""
    result = run_stack(raw)
    vm = result.of_type("gpu-stack:index:GpuPassthroughVm")[0]
    domain = next(r for r in result.children_of(vm.name) if r.type == "libvirt:index/domain:Domain")
    return domain_files(result.resources, domain)["domain.xml"]


@pytest.fixture(scope="module")
def libvirtd():
    require_tool("virsh")
    proc = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True, text=True)
    if proc.returncode != 0:
        missing_validator(f"no libvirtd answers on qemu:///system (scripts/start-libvirtd.sh starts one): {proc.stderr.strip()}")


def _validate(xml: str, tmp_path) -> None:
    tool = require_tool("virt-xml-validate")
    require_tool("xmllint")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    proc = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_expanders_at_the_limit_validate_define_and_boot(tmp_path, libvirtd):
    from tests.support.libvirt_host import Domain, for_tcg_boot, for_this_machine

    xml = domain_xml(_many_devices_raw(MAX_PORTS_PER_EXPANDER, MAX_EXPANDERS, True))
    doc = etree.fromstring(xml.encode())
    expanders = doc.findall("./devices/controller[@model='pcie-expander-bus']")
    assert len(expanders) == MAX_EXPANDERS
    indexes = [int(c.get("index")) for c in doc.findall("./devices/controller[@type='pci']")]
    assert max(indexes) <= MAX_BUS
    assert max(int(a.get("slot"), 16) for a in doc.iter("address") if a.get("slot")) <= 0x1F
    _validate(xml, tmp_path)
    with Domain(for_this_machine(xml), tmp_path):
        pass
    with Domain(for_tcg_boot(xml, phys_bits=46), tmp_path) as dom:
        dom.start()
        seen: list[str] = []

        def numbered() -> bool:
            seen[:] = [dom.hmp("info pci")]
            return f"secondary bus {MAX_BUS}" in seen[0]

        assert dom.wait_for(numbered, timeout=180), "the firmware did not number the last expander's last root port"
        info = seen[0]  # the very listing that showed the last bus (a second query can race the firmware)
    buses = {int(b) for b in re.findall(r"secondary bus (\d+)", info)}
    first = int(expanders[0].find("target").get("busNr"))
    behind = sorted(b for b in buses if b > first)
    assert len(behind) == MAX_EXPANDERS * MAX_PORTS_PER_EXPANDER, "every root port behind an expander got its own bus"


def test_pcie_root_at_the_limit_defines_and_one_past_does_not(tmp_path, libvirtd):
    from tests.support.libvirt_host import Domain, for_this_machine

    xml = domain_xml(_many_devices_raw(MAX_ROOT_HOSTDEVS, 1, False))
    _validate(xml, tmp_path)
    with Domain(for_this_machine(xml), tmp_path) as dom:
        ports = dom.dumpxml().findall("./devices/controller[@model='pcie-root-port']")
    assert len(ports) >= MAX_ROOT_HOSTDEVS
    # one past: rendered without the config check (it refuses this first), libvirt refuses it too
    doc = etree.fromstring(xml.encode())
    devices = doc.find("devices")
    extra = etree.fromstring(etree.tostring(devices.find("hostdev")))
    extra.find("source/address").set("bus", "0x7f")
    extra.find("source/address").set("slot", "0x00")
    devices.append(extra)
    past = etree.tostring(doc, encoding="unicode")
    path = tmp_path / "past.xml"
    path.write_text(for_this_machine(past))
    proc = subprocess.run(["virsh", "-c", "qemu:///system", "define", str(path)], capture_output=True, text=True)
    if proc.returncode == 0:
        name = etree.fromstring(path.read_bytes()).findtext("name")
        subprocess.run(["virsh", "-c", "qemu:///system", "undefine", "--nvram", name], capture_output=True)
    assert proc.returncode != 0 and "PCI slot is needed" in proc.stderr, proc.stderr
