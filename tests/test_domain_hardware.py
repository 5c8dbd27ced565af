"""Domain details that real hosts need (issue 11): CPU topology from the cells, SMT sibling pairs,
housekeeping CPUs for the emulator and I/O threads, and the libvirt/QEMU versions the XML needs.

The generated XML itself goes through virt-xml-validate, libvirtd define and a TCG boot in
tests/test_domain_libvirt.py (cases dev, seed000, seed000-smt ...); here the rules behind it.
"""

from __future__ import annotations

import copy

import pytest

from render.domain_xslt import cpu_topology
from render.hypervisor import MINIMUMS, domain_elements, minimum_versions, version_problems
from stacks.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import seed000_host, seed000_vm, stack_file

SECRETS = {"sshPrivateKey", "grafanaAdminPassword"}


def _seed000(**host):
    raw = stack_file("dev")
    raw["hosts"] = [{**seed000_host(), **host}]
    raw["vms"] = [seed000_vm()]
    raw["addons"]["devicePlugin"] = {"enabled": False}
    raw["addons"]["gpuOperator"] = {"enabled": True}
    return raw


SMT = [f"{c},{c + 96}" for c in range(96)]


def test_topology_is_one_socket_per_cell_not_one_per_vcpu():
    _, placements = parse_stack_config(_seed000(), SECRETS)
    assert cpu_topology(placements["ubuntu-gpu"]) == (2, 32, 1)


def test_uneven_cells_share_one_socket():
    raw = _seed000()
    raw["vms"][0]["vcpus"] = 63
    _, placements = parse_stack_config(raw, SECRETS)
    sockets, cores, threads = cpu_topology(placements["ubuntu-gpu"])
    assert (sockets, cores, threads) == (1, 63, 1)


def test_smt_hosts_get_sibling_pairs_and_threads_2():
    _, placements = parse_stack_config(_seed000(threadSiblings=SMT), SECRETS)
    p = placements["ubuntu-gpu"]
    assert p.threads == 2 and cpu_topology(p) == (2, 16, 2)
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

def test_generated_xml_needs_libvirt_8_7_for_maxphysaddr():
    raw = _seed000()
    cfg, _ = parse_stack_config(raw, SECRETS)
    elements = domain_elements(cfg.vms[0], cfg.hosts[0])
    assert minimum_versions(elements)[0] == "8.7.0"
    assert version_problems(elements, "8.7.0", "7.2.0") == []
    assert version_problems(elements, None, None) == [], "unknown versions are not checked"
    problems = version_problems(elements, "8.0.0", None)
    assert len(problems) == 1 and problems[0].startswith("<cpu/maxphysaddr> needs libvirt 8.7.0 or later, the host has 8.0.0")


def test_expander_bus_has_its_own_minimum():
    assert MINIMUMS["controller[@model='pcie-expander-bus']/target/node"].libvirt == (1, 3, 4)
    problems = version_problems(["controller[@model='pcie-expander-bus']/target/node"], "1.3.3", None)
    assert problems and "pcie-expander-bus" in problems[0]


def test_an_old_hypervisor_is_refused_naming_host_and_element():
    with pytest.raises(ConfigError) as err:
        parse_stack_config(_seed000(libvirtVersion="8.0.0", qemuVersion="2.6.0"), SECRETS)
    text = str(err.value)
    assert "gpu-stack:hosts[0].libvirtVersion: host hgx-1, VM ubuntu-gpu: <cpu/maxphysaddr> needs libvirt 8.7.0" in text
    assert "gpu-stack:hosts[0].qemuVersion: host hgx-1, VM ubuntu-gpu: <cpu/maxphysaddr> needs QEMU 2.7.0" in text


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
