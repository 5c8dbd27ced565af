"""The domain XML, checked by the programs that consume it.

1. xsltproc (what the provider runs) applies our stylesheet to the provider's
   pre-XSLT XML, rebuilt from the Domain inputs the program registered;
2. virt-xml-validate checks the result against libvirt's RNG schema;
3. a real libvirtd defines it, and the read-back still has every element the
   stylesheet added (libvirt silently drops misplaced ones);
4. QEMU boots it under TCG to the firmware with the same hole64, phys-bits
   and NUMA shape, and refuses it with one phys-bit fewer than we compute.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from render.mmio import phys_bits_needed
from hypervisors.libvirt.provider_xml import VolumeRef, provider_domain_xml
from tests.conftest import missing_validator, require_reference, require_tool, run_stack, seed000_burn_in, seed000_host, seed000_vm, stack_file
from hypervisors.libvirt.plan_files import domain_files

QEMU_NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"


def reference_pre_xslt() -> str:
    text = require_reference("tf-libvirt-v0.8.1-base-domain.xml").read_text()
    return re.sub(r"^<!--.*?-->\n", "", text, flags=re.S)


def test_provider_xml_replica_matches_the_reference_byte_for_byte():
    inputs = {
        "type": "kvm", "name": "gpu-node-0", "memory": 262144, "vcpu": 32, "arch": "x86_64", "machine": "q35",
        "firmware": "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "nvram": {"file": "/var/lib/libvirt/qemu/nvram/gpu-node-0_VARS.fd", "template": "/usr/share/OVMF/OVMF_VARS_4M.fd"},
        "cpu": {"mode": "host-passthrough"}, "disks": [{"volumeId": "root"}], "cloudinit": "ci",
        "networkInterfaces": [{"mac": "52:54:00:a9:a2:11", "networkName": "default"}],
        "consoles": [{"type": "pty", "targetType": "serial", "targetPort": "0"}],
        "graphics": {"type": "vnc", "listenType": "address"},
    }
    got = provider_domain_xml(inputs, {"root": VolumeRef("default", "gpu-node-0-root.qcow2", "qcow2")},
                              {"ci": "/var/lib/libvirt/images/gpu-node-0-cloudinit.iso"})
    assert got == reference_pre_xslt()


def _seed000_raw() -> dict:
    raw = stack_file("dev")
    raw["hosts"] = [seed000_host()]
    raw["vms"] = [seed000_vm()]
    raw["burnIn"] = seed000_burn_in()
    raw["addons"]["devicePlugin"] = {"enabled": False}
    raw["addons"]["gpuOperator"] = {"enabled": True}
    return raw


def _variant_raw() -> dict:
    """Consumer GPU (KVM hidden), 1 GiB hugepages, explicit pins."""
    raw = stack_file("dev")
    vm = raw["vms"][0]
    vm["gpus"] = [{"address": "0000:3b:00.0", "model": "RTX-4090", "numaNode": 0}]
    vm["numa"] = {"hugepages1g": True, "cells": [{"hostNode": 0, "vcpus": 8, "memoryGib": 64, "hostCpus": "2-9"}]}
    return raw


def _affinity_raw() -> dict:
    """Seed 000 with each GPU behind a pcie-expander-bus on its guest NUMA cell."""
    raw = _seed000_raw()
    raw["vms"][0]["numa"] = {"exposeGpuAffinity": True}
    return raw


def _smt_raw() -> dict:
    """Seed 000's host with its SMT siblings declared (cpu c and c+96 share a core): sibling-pair pinning, threads=2."""
    raw = _seed000_raw()
    raw["hosts"][0]["threadSiblings"] = [f"{c},{c + 96}" for c in range(96)]
    return raw


CASES = {"dev": lambda: stack_file("dev"), "seed000": _seed000_raw, "consumer-hugepages": _variant_raw,
         "seed000-affinity": _affinity_raw, "seed000-smt": _smt_raw}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    raw = CASES[request.param]()
    result = run_stack(raw)
    vm = result.of_type("gpu-stack:index:GpuPassthroughVm")[0]
    domain = next(r for r in result.children_of(vm.name) if r.type == "libvirt:index/domain:Domain")
    files = domain_files(result.resources, domain)
    return {"name": request.param, "raw": raw, "files": files, "domain": domain}


@pytest.fixture(scope="module")
def transformed(case, tmp_path_factory) -> dict:
    xsltproc = require_tool("xsltproc")
    tmp = tmp_path_factory.mktemp(case["name"])
    (tmp / "d.xslt").write_text(case["files"]["domain.xslt"])
    (tmp / "in.xml").write_text(case["files"]["domain.pre-xslt.xml"])
    proc = subprocess.run([xsltproc, "--nomkdir", "--nonet", "--nowrite", str(tmp / "d.xslt"), str(tmp / "in.xml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"xsltproc warned (an undeclared namespace is only a warning): {proc.stderr}"
    (tmp / "out.xml").write_text(proc.stdout)
    return {**case, "xml": proc.stdout, "tmp": tmp}


def _c14n(xml: str) -> bytes:
    return etree.tostring(etree.fromstring(xml.encode()), method="c14n")


def test_xsltproc_gives_what_the_plan_shows(transformed):
    assert _c14n(transformed["xml"]) == _c14n(transformed["files"]["domain.xml"])


def test_virt_xml_validate_accepts_it(transformed):
    tool = require_tool("virt-xml-validate")
    require_tool("xmllint")
    proc = subprocess.run([tool, str(transformed["tmp"] / "out.xml"), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def expected_elements(case) -> dict[str, int]:
    raw_vm = case["raw"]["vms"][0]
    vcpus = raw_vm["vcpus"]
    devices = len(raw_vm.get("gpus", [])) + len(raw_vm.get("nvswitches", []))
    cells = len(raw_vm.get("numa", {}).get("cells") or {d["numaNode"] for d in raw_vm["gpus"]})
    return {
        "./devices/hostdev[@type='pci']/driver[@name='vfio']": devices,
        "./cpu/maxphysaddr[@mode='passthrough']": 1,
        "./cpu/numa/cell": cells,
        "./cputune/vcpupin": vcpus,
        "./cputune/emulatorpin": 1,
        "./numatune/memory[@mode='strict']": 1,
        "./numatune/memnode": cells,
        f"./{QEMU_NS}commandline/{QEMU_NS}arg": 2,
        "./devices/disk[@device='cdrom']/target[@bus='sata']": 1,
        "./devices/disk[@device='cdrom']/serial": 1,
        "./devices/memballoon[@model='none']": 1,
        "./features/kvm/hidden[@state='on']": 1 if case["name"] == "consumer-hugepages" else 0,
        "./memoryBacking/hugepages/page": 1 if case["name"] == "consumer-hugepages" else 0,
        "./devices/controller[@model='pcie-expander-bus']": cells if case["name"] == "seed000-affinity" else 0,
        "./cpu/topology": 1,
        "./iothreads": 1 if _reserved(case) else 0,
        "./cputune/iothreadpin[@iothread='1']": 1 if _reserved(case) else 0,
        "./devices/disk[@device='disk']/driver[@iothread='1']": 1 if _reserved(case) else 0,
    }


def _reserved(case) -> str:
    return case["raw"]["hosts"][0].get("reservedCpus", "")


@pytest.fixture(scope="module")
def libvirtd():
    require_tool("virsh")
    proc = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True, text=True)
    if proc.returncode != 0:
        missing_validator(f"no libvirtd answers on qemu:///system (scripts/start-libvirtd.sh starts one): {proc.stderr.strip()}")


def test_libvirtd_defines_it_and_keeps_every_added_element(transformed, libvirtd):
    from tests.support.libvirt_host import Domain, for_this_machine

    with Domain(for_this_machine(transformed["xml"]), transformed["tmp"]) as dom:
        back = dom.dumpxml()
    for xpath, count in expected_elements(transformed).items():
        assert len(back.findall(xpath)) == count, f"{transformed['name']}: {xpath} read back {len(back.findall(xpath))}x, expected {count}"
    hole = [a.get("value") for a in back.findall(f"./{QEMU_NS}commandline/{QEMU_NS}arg")]
    assert hole[0] == "-global" and hole[1].startswith("q35-pcihost.pci-hole64-size=")
    cells_kib = sum(int(c.get("memory")) for c in back.findall("./cpu/numa/cell"))
    assert cells_kib == int(back.findtext("memory")), "NUMA cells must sum to the memory size, or libvirt rewrites it"
    assert int(back.findtext("memory")) == transformed["raw"]["vms"][0]["memoryGib"] * 1024 * 1024
    assert all(pin.get("cpuset").isdigit() for pin in back.findall("./cputune/vcpupin")), "one host CPU per vCPU"
    topo = back.find("./cpu/topology")
    sockets, dies, cores, threads = (int(topo.get(k)) for k in ("sockets", "dies", "cores", "threads"))
    vcpus = transformed["raw"]["vms"][0]["vcpus"]
    assert sockets * dies * cores * threads == vcpus, "libvirt's rule: the topology holds exactly the vCPUs"
    cells = back.findall("./cpu/numa/cell")
    if len({c.get("cpus") for c in cells}) == len(cells) and sockets > 1:
        assert sockets == len(cells), "one socket per guest NUMA cell"
    pins = {int(p.get("vcpu")): int(p.get("cpuset")) for p in back.findall("./cputune/vcpupin")}
    if transformed["name"] == "seed000-smt":
        assert threads == 2
        assert all(pins[v + 1] == pins[v] + 96 for v in range(0, vcpus, 2)), "vCPUs 2k, 2k+1 on the two threads of one core"
    else:
        assert threads == 1
    if _reserved(transformed):
        assert back.find("./cputune/emulatorpin").get("cpuset") == _reserved(transformed), "emulator on the housekeeping CPUs"
        assert back.find("./cputune/iothreadpin").get("cpuset") == _reserved(transformed)
        assert not set(pins.values()) & {int(c) for c in _reserved(transformed).split(",")}
    expanders = {int(c.get("index")) for c in back.findall("./devices/controller[@model='pcie-expander-bus']")}
    if expanders:
        ports = {int(c.get("index")) for c in back.findall("./devices/controller[@model='pcie-root-port']")
                 if int(c.find("address").get("bus"), 16) in expanders}
        buses = [int(a.get("bus"), 16) for a in back.findall("./devices/hostdev/address")]
        assert buses and set(buses) <= ports, "every hostdev sits behind an expander's root port"


def test_stylesheet_stops_when_the_provider_xml_lacks_cpu(transformed):
    xsltproc = require_tool("xsltproc")
    broken = re.sub(r"\s*<cpu[^>]*></cpu>", "", transformed["files"]["domain.pre-xslt.xml"])
    path = transformed["tmp"] / "broken.xml"
    path.write_text(broken)
    proc = subprocess.run([xsltproc, "--nonet", str(transformed["tmp"] / "d.xslt"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 10, "terminate=yes exits 10, which the provider reports as a failed create"
    assert "refusing to drop the passthrough settings" in proc.stderr


def _seed000_transformed(tmp_path, raw: dict | None = None) -> str:
    result = run_stack(raw or _seed000_raw())
    files = domain_files(result.resources, result.named("ubuntu-gpu-domain"))
    xsltproc = require_tool("xsltproc")
    (tmp_path / "d.xslt").write_text(files["domain.xslt"])
    (tmp_path / "in.xml").write_text(files["domain.pre-xslt.xml"])
    return subprocess.run([xsltproc, "--nonet", str(tmp_path / "d.xslt"), str(tmp_path / "in.xml")],
                          capture_output=True, text=True, check=True).stdout


def _firmware_ran(dom) -> bool:
    pci = dom.hmp("info pci")
    return bool(re.search(r"prefetchable memory range \[0x[0-9a-f]{9,}", pci))


def test_seed000_boots_to_firmware_under_tcg_with_the_2048g_hole(tmp_path, libvirtd):
    require_tool("qemu-system-x86_64")
    from tests.support.libvirt_host import Domain, for_tcg_boot

    xml = _seed000_transformed(tmp_path)
    bits = phys_bits_needed(memory_gib=1, hole_gib=2048)  # the scaled-down boot has 512 MiB RAM
    with Domain(for_tcg_boot(xml, bits), tmp_path) as dom:
        dom.start()
        assert dom.wait_for(lambda: _firmware_ran(dom), timeout=90), "OVMF did not assign the 64-bit bridge windows"
        hole = dom.qmp('{"execute":"qom-get","arguments":{"path":"/machine/q35","property":"pci-hole64-size"}}')
        assert '"return":2199023255552' in hole.replace(" ", "")
        numa = dom.hmp("info numa")
        assert numa.startswith("2 nodes"), numa


def test_qemu_refuses_the_hole_with_one_phys_bit_fewer_than_computed(tmp_path, libvirtd):
    require_tool("qemu-system-x86_64")
    from tests.support.libvirt_host import Domain, for_tcg_boot, virsh

    xml = _seed000_transformed(tmp_path)
    bits = phys_bits_needed(memory_gib=1, hole_gib=2048) - 1
    with Domain(for_tcg_boot(xml, bits), tmp_path) as dom:
        proc = virsh("start", dom.name, check=False)
    assert proc.returncode != 0
    assert "phys-bits too low" in proc.stderr


def test_gpu_numa_affinity_expanders_boot_on_their_guest_nodes(tmp_path, libvirtd):
    require_tool("qemu-system-x86_64")
    from tests.support.libvirt_host import Domain, for_tcg_boot

    xml = _seed000_transformed(tmp_path, _affinity_raw())
    expanders = etree.fromstring(xml.encode()).findall("./devices/controller[@model='pcie-expander-bus']")
    bits = phys_bits_needed(memory_gib=1, hole_gib=2048)
    with Domain(for_tcg_boot(xml, bits), tmp_path) as dom:
        dom.start()
        assert dom.wait_for(lambda: _firmware_ran(dom), timeout=90)
        for expander in expanders:
            node = expander.findtext("target/node")
            reply = dom.qmp('{"execute":"qom-get","arguments":{"path":"/machine/peripheral/pci.%s","property":"numa_node"}}' % expander.get("index"))
            assert f'"return":{node}' in reply.replace(" ", ""), reply
        bus_numbers = {int(e.find("target").get("busNr")) for e in expanders}
        assert all(f"Bus {b}, device" in dom.hmp("info pci") for b in bus_numbers), "root ports on each expander enumerate"
