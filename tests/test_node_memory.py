"""Issue 29 part 2: host memory counted per NUMA node across all VMs of a host, where it is spent.

Every guest cell is bound strict to its host node (render/domain_xslt.py numatune memnode mode
strict), with or without 1 GiB hugepages, so QEMU takes its memory from that node only: the VMs
must fit each node, less the host's reserve on the nodes where the host spends it; with host facts,
the hugepage VMs must fit the free 1 GiB hugepages each node records.
"""

from __future__ import annotations

import json

import pytest

from render.host_facts import load_host_facts
from render.numa import reserve_by_node
from stacks.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import run_stack, stack_file
from tests.test_bad_input import SECOND_VM
from tests.test_host_facts import ALL_GPUS, NO_INVOKE, SHARED, _host_stack

SECRETS = {"sshPrivateKey", "grafanaAdminPassword"}


def two_vms(second_gib: int, reserved_cpus: str | None = None) -> dict:
    doc = stack_file("dev")
    doc["vms"].append(dict(SECOND_VM, host="lab-gpu-1", memoryGib=second_gib))
    if reserved_cpus is not None:
        doc["hosts"][0]["reservedCpus"] = reserved_cpus
    return doc


def test_two_vms_that_each_fit_but_not_together_on_one_node_are_refused():
    """dev's host: node 0 has 128 GiB and holds the reserved CPUs, so its 8 GiB reserve; 64 + 64 > 120."""
    with pytest.raises(ConfigError) as e:
        parse_stack_config(two_vms(64), SECRETS, "dev")
    [issue] = e.value.issues
    assert issue.path == "hosts[0].numaNodes"
    assert issue.message == (
        "host lab-gpu-1 NUMA node 0: VMs bind 128 GiB there (gpu-dev-0 64 GiB, gpu-dev-1 64 GiB); it has 128 GiB "
        "(hosts[0].numaNodes[0].memoryGib), 8 GiB of it the host's reserve (hosts[0].reservedMemoryGib), "
        "so 120 GiB is left for VMs, 8 GiB short")


def test_two_vms_that_fit_a_node_exactly_are_accepted():
    cfg, placements = parse_stack_config(two_vms(56), SECRETS, "dev")
    assert {c.host_node for p in placements.values() for c in p.cells} == {0}
    assert sum(c.memory_mib for p in placements.values() for c in p.cells) == 120 * 1024


def test_the_reserve_is_taken_where_the_host_spends_it():
    """Reserved CPUs on node 1: the host's housekeeping (and its memory) is there, node 0 is the VMs' whole."""
    host = parse_stack_config(two_vms(64, reserved_cpus="16,48"), SECRETS, "dev")[0].hosts[0]
    assert reserve_by_node(host) == {1: 8}
    no_cpus = parse_stack_config(two_vms(56, reserved_cpus=""), SECRETS, "dev")[0].hosts[0]
    assert reserve_by_node(no_cpus) == {0: 4, 1: 4}
    with pytest.raises(ConfigError, match="4 GiB of it the host's reserve"):
        parse_stack_config(two_vms(64, reserved_cpus=""), SECRETS, "dev")


def _facts_with(tmp_path, free: dict[int, int] | None):
    doc = json.loads(SHARED.read_text())
    for node in doc["numaNodes"]:
        if free is None:
            node.pop("freeHugepages1g")
        else:
            node["freeHugepages1g"] = free[node["id"]]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(doc))
    return path


def _hugepage_stack() -> dict:
    cfg = _host_stack(ALL_GPUS)
    cfg["vms"][0]["numa"] = {**cfg["vms"][0].get("numa", {}), "hugepages1g": True}
    return cfg


def test_hugepage_vms_are_counted_against_the_free_1g_pages_the_facts_record(tmp_path):
    cfg = _hugepage_stack()
    gib = cfg["vms"][0]["memoryGib"]
    with pytest.raises(ConfigError) as e:
        run_stack(cfg, host_facts=[_facts_with(tmp_path, {0: gib // 2 - 1, 1: gib})], node_devices=NO_INVOKE)
    issues = {i.path: i.message for i in e.value.issues}
    message = issues["hosts[0].numaNodes[0]"]
    assert f"host hgx-h100-1 NUMA node 0: VMs with numa.hugepages1g take {gib // 2} 1 GiB hugepages there" in message
    assert f"{cfg['vms'][0]['name']} {gib // 2} GiB" in message and f"record {gib // 2 - 1} free" in message and "1 short" in message
    assert set(issues) == {"hosts[0].numaNodes[0]"}
    run_stack(cfg, host_facts=[_facts_with(tmp_path, {0: gib // 2, 1: gib // 2})], node_devices=NO_INVOKE)


def test_facts_written_before_hugepages_were_recorded_still_load(tmp_path):
    path = _facts_with(tmp_path, None)
    facts = load_host_facts(str(path))
    assert all(n.free_hugepages_1g is None for n in facts.numa_nodes)
    run_stack(_hugepage_stack(), host_facts=[path], node_devices=NO_INVOKE)  # not checked without the count
    assert {n.free_hugepages_1g for n in load_host_facts(str(SHARED)).numa_nodes} == {0}
