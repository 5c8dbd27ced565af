"""Domain details that real hosts need (issue 11): CPU topology from the cells, SMT sibling pairs,
housekeeping CPUs for the emulator and I/O threads, and the libvirt/QEMU versions the XML needs.

The generated XML itself goes through virt-xml-validate, libvirtd define and a TCG boot in
tests/test_domain_libvirt.py (cases dev, seed000, seed000-smt ...); here the rules behind it.
"""

from __future__ import annotations

import copy

import pytest

from render.numa import guest_topology
from render.hypervisor import MINIMUMS, domain_elements, version_problems
from tests.support.hypervisor import minimum_versions
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import seed000_burn_in, seed000_host, seed000_vm, stack_file

SECRETS = {"sshPrivateKey", "grafanaAdminPassword"}


def _seed000(**host):
    raw = stack_file("dev")
    raw["hosts"] = [{**seed000_host(), **host}]
    raw["vms"] = [seed000_vm()]
    raw["burnIn"] = seed000_burn_in()
    raw["addons"]["devicePlugin"] = {"enabled": False}
    raw["addons"]["gpuOperator"] = {"enabled": True}
    return raw


SMT = [f"{c},{c + 96}" for c in range(96)]


def test_topology_is_one_socket_per_cell_not_one_per_vcpu():
    _, placements = parse_stack_config(_seed000(), SECRETS)
    assert guest_topology(placements["ubuntu-gpu"]) == (2, 32, 1)


def test_uneven_cells_share_one_socket():
    raw = _seed000()
    raw["vms"][0]["vcpus"] = 63
    _, placements = parse_stack_config(raw, SECRETS)
    sockets, cores, threads = guest_topology(placements["ubuntu-gpu"])
    assert (sockets, cores, threads) == (1, 63, 1)


def test_smt_hosts_get_sibling_pairs_and_threads_2():
    _, placements = parse_stack_config(_seed000(threadSiblings=SMT), SECRETS)
    p = placements["ubuntu-gpu"]
    assert p.threads == 2 and guest_topology(p) == (2, 16, 2)
    first = p.cells[0]
    assert first.host_cpus[:4] == (1, 97, 2, 98), "core 0 (CPUs 0 and 96) is reserved, so pairs start at core 1"
    assert all(b == a + 96 for a, b in zip(first.host_cpus[::2], first.host_cpus[1::2]))


def test_smt_needs_even_vcpus_per_cell():
    raw = _seed000(threadSiblings=SMT)
    raw["vms"][0]["vcpus"] = 62
    raw["vms"][0]["numa"] = {"cells": [{"hostNode": 0, "vcpus": 31, "memoryGib": 128}, {"hostNode": 1, "vcpus": 31, "memoryGib": 128}]}
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, SECRETS)
    assert "vms[0].numa.cells[0]" in str(err.value) and "give an even number per cell" in str(err.value)


@pytest.mark.parametrize("entry, message", [
    ("1,2,3", "lists 3 CPUs"),
    ("47,48", "both threads must be CPUs of one NUMA node"),
])
def test_thread_siblings_are_checked(entry, message):
    with pytest.raises(ConfigError) as err:
        parse_stack_config(_seed000(threadSiblings=[entry]), SECRETS)
    assert "gpu-stack:hosts[0].threadSiblings[0]" in str(err.value) and message in str(err.value)


# --- versions ----------------------------------------------------------------------------------

def test_generated_xml_needs_libvirt_8_7_for_maxphysaddr_and_so_qemu_4_2():
    raw = _seed000()
    cfg, _ = parse_stack_config(raw, SECRETS)
    elements = domain_elements(cfg.vms[0], cfg.hosts[0])
    assert minimum_versions(elements) == ("8.7.0", "4.2.0")
    assert version_problems(elements, "8.7.0", "7.2.0") == []
    assert version_problems(elements, None, None) == [], "unknown versions are not checked"
    problems = version_problems(elements, "8.0.0", None)
    assert len(problems) == 1 and problems[0][0] == "libvirtVersion"
    assert problems[0][1].startswith("<cpu/maxphysaddr> needs libvirt 8.7.0 or later, the host has 8.0.0")


def test_expander_bus_has_its_own_minimum():
    assert MINIMUMS["controller[@model='pcie-expander-bus']/target/node"].libvirt == (1, 3, 4)
    problems = version_problems(["controller[@model='pcie-expander-bus']/target/node"], "1.3.3", None)
    assert problems and problems[0][0] == "libvirtVersion" and "pcie-expander-bus" in problems[0][1]


def test_an_old_hypervisor_is_refused_naming_host_and_element():
    with pytest.raises(ConfigError) as err:
        parse_stack_config(_seed000(libvirtVersion="8.0.0", qemuVersion="2.6.0"), SECRETS)
    text = str(err.value)
    assert "gpu-stack:hosts[0].libvirtVersion: host hgx-1, VM ubuntu-gpu: <cpu/maxphysaddr> needs libvirt 8.7.0" in text
    assert "gpu-stack:hosts[0].qemuVersion: host hgx-1, VM ubuntu-gpu: <cpu/maxphysaddr> needs QEMU 4.2.0" in text


def test_this_machines_libvirt_passes():
    """Debian 12 (libvirt 9.0, QEMU 7.2) defines and boots these domains in tests/test_domain_libvirt.py."""
    parse_stack_config(_seed000(libvirtVersion="9.0.0", qemuVersion="7.2.0"), SECRETS)


def test_smt_reported_by_libvirt_but_not_declared_is_warned_about():
    from render.hypervisor import smt_undeclared
    cfg, _ = parse_stack_config(_seed000(), SECRETS)
    message = smt_undeclared(0, cfg.hosts[0], 2)
    assert message.startswith("gpu-stack:hosts[0].threadSiblings: host hgx-1 reports 2 threads per core")
    assert smt_undeclared(0, cfg.hosts[0], 1) is None and smt_undeclared(0, cfg.hosts[0], None) is None
    declared, _ = parse_stack_config(_seed000(threadSiblings=SMT), SECRETS)
    assert smt_undeclared(0, declared.hosts[0], 2) is None


# --- versions: each minimum, verified 2026-12-02 (docs/SOURCES.md "Domain elements") ------------

# (element, libvirt minimum, the release before it, QEMU minimum, the QEMU release before it)
VERIFIED = [
    ("cpu/maxphysaddr", "8.7.0", "8.6.0", "4.2.0", "4.1.1"),
    ("cpu/topology/@dies", "6.1.0", "6.0.0", None, None),
    ("cpu/numa/cell", "1.2.11", "1.2.10", None, None),
    ("cputune/vcpupin", "0.9.0", "0.8.8", None, None),
    ("cputune/emulatorpin", "0.10.0", "0.9.13", None, None),
    ("numatune/memory", "0.9.3", "0.9.2", None, None),
    ("numatune/memnode", "1.2.7", "1.2.6", None, None),
    ("memballoon[@model='none']", "0.8.4", "0.8.3", None, None),
    ("disk[@device='cdrom']/target[@bus='sata']", "0.9.7", "0.9.6", None, None),
    ("hostdev[@type='pci'][@managed='yes']/driver[@name='vfio']", "1.0.5", "1.0.4", "1.3.0", "1.2.2"),
    ("controller[@model='pcie-expander-bus']/target/node", "1.3.4", "1.3.3", "2.6.0", "2.5.0"),
    ("controller[@model='pcie-root-port']", "1.2.19", "1.2.18", None, None),
    ("iothreads", "1.2.8", "1.2.7", None, None),
    ("cputune/iothreadpin", "1.2.9", "1.2.8", None, None),
    ("disk/driver/@iothread", "1.2.8", "1.2.7", "2.1.0", "2.0.0"),
    ("memoryBacking/hugepages/page", "1.2.5", "1.2.4", None, None),
    ("features/kvm/hidden", "1.2.8", "1.2.7", "2.1.0", "2.0.0"),
    ("qemu:commandline -global q35-pcihost.pci-hole64-size", None, None, "1.6.0", "1.5.3"),
]


@pytest.mark.parametrize("element, libvirt, libvirt_before, qemu, qemu_before", VERIFIED, ids=[v[0] for v in VERIFIED])
def test_each_minimum_accepts_its_release_and_refuses_the_one_before(element, libvirt, libvirt_before, qemu, qemu_before):
    m = MINIMUMS[element]
    assert (m.libvirt and ".".join(map(str, m.libvirt)), m.qemu and ".".join(map(str, m.qemu))) == (libvirt, qemu)
    assert version_problems([element], libvirt, qemu) == []
    if libvirt is None:
        assert version_problems([element], "0.0.1", None) == [], "no libvirt minimum is stated, none is checked"
    else:
        problems = version_problems([element], libvirt_before, None)
        assert len(problems) == 1 and problems[0][0] == "libvirtVersion"
        assert problems[0][1].startswith(f"<{element}> needs libvirt {libvirt} or later, the host has {libvirt_before}")
    if qemu is None:
        assert version_problems([element], None, "0.1") == []
    else:
        problems = version_problems([element], None, qemu_before)
        assert len(problems) == 1 and problems[0][0] == "qemuVersion"
        assert problems[0][1].startswith(f"<{element}> needs QEMU {qemu} or later, the host has {qemu_before}")


def test_a_two_part_version_meets_its_dot_zero_minimum():
    """hosts[].libvirtVersion accepts "8.7" (the pattern allows two parts); it is 8.7.0, not older."""
    assert version_problems(["cpu/maxphysaddr"], "8.7", "4.2") == []
    assert len(version_problems(["cpu/maxphysaddr"], "8.6", "4.1")) == 2


def test_every_minimum_is_verified_here():
    assert sorted(MINIMUMS) == sorted([v[0] for v in VERIFIED] + ["cpu/maxphysaddr[@mode='emulate']/@bits"])


def test_the_dies_attribute_needs_libvirt_6_1_on_its_own():
    elements = [e for e in domain_elements(*_seed000_vm_host()) if e != "cpu/maxphysaddr"]
    problems = version_problems(elements, "6.0.0", None)
    assert [(key, p.split(" needs")[0]) for key, p in problems] == [("libvirtVersion", "<cpu/topology/@dies>")]


def _seed000_vm_host(**host):
    cfg, _ = parse_stack_config(_seed000(**host), SECRETS)
    return cfg.vms[0], cfg.hosts[0]


QEMU_NS = {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}
# Where each MINIMUMS element shows in the domain XML after the stylesheet (hypervisors/libvirt/domain_xslt.py).
XPATH = {
    "cpu/maxphysaddr": "./cpu/maxphysaddr[@mode='passthrough']",
    "cpu/maxphysaddr[@mode='emulate']/@bits": "./cpu/maxphysaddr[@mode='emulate'][@bits]",
    "cpu/topology/@dies": "./cpu/topology[@dies]",
    "cpu/numa/cell": "./cpu/numa/cell",
    "cputune/vcpupin": "./cputune/vcpupin",
    "cputune/emulatorpin": "./cputune/emulatorpin",
    "numatune/memory": "./numatune/memory",
    "numatune/memnode": "./numatune/memnode",
    "memballoon[@model='none']": "./devices/memballoon[@model='none']",
    "disk[@device='cdrom']/target[@bus='sata']": "./devices/disk[@device='cdrom']/target[@bus='sata']",
    "hostdev[@type='pci'][@managed='yes']/driver[@name='vfio']": "./devices/hostdev[@type='pci'][@managed='yes']/driver[@name='vfio']",
    "controller[@model='pcie-expander-bus']/target/node": "./devices/controller[@model='pcie-expander-bus']/target/node",
    "controller[@model='pcie-root-port']": "./devices/controller[@model='pcie-root-port']",
    "iothreads": "./iothreads",
    "cputune/iothreadpin": "./cputune/iothreadpin",
    "disk/driver/@iothread": "./devices/disk/driver[@iothread]",
    "memoryBacking/hugepages/page": "./memoryBacking/hugepages/page",
    "features/kvm/hidden": "./features/kvm/hidden",
    "qemu:commandline -global q35-pcihost.pci-hole64-size": "./qemu:commandline/qemu:arg[starts-with(@value, 'q35-pcihost.pci-hole64-size=')]",
}


def _no_reserved_cpus():
    from tests.test_domain_libvirt import _variant_raw
    raw = _variant_raw()
    raw["hosts"][0].pop("reservedCpus", None)
    return raw


def _no_devices():
    from tests.test_domain_libvirt import _variant_raw
    raw = _variant_raw()
    raw["vms"][0]["gpus"] = []
    raw["vms"][0]["kvmHidden"] = False
    return raw


def _domain_cases():
    from tests.test_domain_libvirt import CASES
    return {**CASES, "consumer-no-reserved-cpus": _no_reserved_cpus, "no-devices": _no_devices}


@pytest.mark.parametrize("name", sorted(_domain_cases()))
def test_checked_elements_are_exactly_the_emitted_ones(name):
    """domain_elements() mirrors the stylesheet: an element is checked if and only if the XML has it."""
    from lxml import etree

    from tests.conftest import run_stack
    from hypervisors.libvirt.plan_files import domain_files
    raw = _domain_cases()[name]()
    cfg, _ = parse_stack_config(copy.deepcopy(raw), SECRETS)
    result = run_stack(raw)
    component = result.of_type("gpu-stack:index:GpuPassthroughVm")[0]
    domain = next(r for r in result.children_of(component.name) if r.type == "libvirt:index/domain:Domain")
    xml = etree.fromstring(domain_files(result.resources, domain)["domain.xml"].encode())
    vm = next(v for v in cfg.vms if v.name in component.name)
    host = next(h for h in cfg.hosts if h.name == vm.host)
    emitted = {e for e, path in XPATH.items() if xml.xpath(path, namespaces=QEMU_NS)}
    assert sorted(XPATH) == sorted(MINIMUMS)
    assert sorted(emitted) == sorted(domain_elements(vm, host))


def test_unequal_cells_get_one_socket_on_every_backend_that_places_the_vm():
    """3 + 5 vCPUs: one socket (no socket may span two cells); vSphere's numCoresPerSocket follows the same rule."""
    from render.numa import Cell, Placement
    from render.vm_plan import plan_vm
    from hypervisors.vsphere.render import num_cores_per_socket

    placement = Placement(cells=(Cell(0, 0, (0, 1, 2), (0, 1, 2), 1024), Cell(1, 1, (3, 4, 5, 6, 7), (48, 49, 50, 51, 52), 1024)))
    assert guest_topology(placement) == (1, 8, 1)
    cfg, _ = parse_stack_config(_seed000(), SECRETS)
    vm = cfg.vms[0].model_copy(update={"vcpus": 8, "numa": cfg.vms[0].numa.model_copy(update={"host_nodes": (0, 1)})})
    plan = plan_vm(vm, derived_mac="00:50:56:00:00:01", project="gpu-stack", stack="t", placement=placement, ssh_user="u", ssh_public_key="ssh-ed25519 AAAA")
    assert num_cores_per_socket(plan, vm) == 8
