"""Issue 29 part 2: host memory counted per NUMA node across all VMs of a host, where it is spent.

Every guest cell is bound strict to its host node (hypervisors/libvirt/domain_xslt.py numatune memnode mode
strict), with or without 1 GiB hugepages, so QEMU takes its memory from that node only: the VMs
must fit each node, less the host's reserve on the nodes where the host spends it; with host facts,
the hugepage VMs must fit the 1 GiB hugepage pool (nr_hugepages) each node records.
"""

from __future__ import annotations

import json

import pytest

from facts.host_facts import load_host_facts
from render.numa import reserve_by_node
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import run_stack, stack_file
from tests.test_bad_input import SECOND_VM
from tests.support.host_sandbox import HostSandbox, captured_hgx_h100, with_spec
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


def _facts_with(tmp_path, pools: dict[int, tuple[int, int]] | None):
    """The captured host's facts with each node's 1 GiB pool (nr_hugepages, free_hugepages); None: a facts
    file written before scripts/host-facts.sh recorded either."""
    doc = json.loads(SHARED.read_text())
    for node in doc["numaNodes"]:
        if pools is None:
            node.pop("hugepages1g")
            node.pop("freeHugepages1g")
        else:
            node["hugepages1g"], node["freeHugepages1g"] = pools[node["id"]]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(doc))
    return path


def _hugepage_stack() -> dict:
    cfg = _host_stack(ALL_GPUS)
    cfg["vms"][0]["numa"] = {**cfg["vms"][0].get("numa", {}), "hugepages1g": True}
    return cfg


def test_hugepage_vms_are_counted_against_each_nodes_1g_pool_the_facts_record(tmp_path):
    cfg = _hugepage_stack()
    gib = cfg["vms"][0]["memoryGib"]
    with pytest.raises(ConfigError) as e:
        run_stack(cfg, host_facts=[_facts_with(tmp_path, {0: (gib // 2 - 1, gib // 2 - 1), 1: (gib, gib)})], node_devices=NO_INVOKE)
    issues = {i.path: i.message for i in e.value.issues}
    assert set(issues) == {"hosts[0].numaNodes[0]"}
    assert issues["hosts[0].numaNodes[0]"] == (
        f"host hgx-h100-1 NUMA node 0: VMs with numa.hugepages1g take {gib // 2} 1 GiB hugepages there ({cfg['vms'][0]['name']} {gib // 2} GiB), "
        f"host facts {tmp_path / 'facts.json'} record a pool of {gib // 2 - 1} (hugepages-1048576kB/nr_hugepages), 1 short: "
        "reserve more on that node (hugepagesz=1G hugepages=... or nodeN/.../nr_hugepages) or lower the VMs' memoryGib")
    run_stack(cfg, host_facts=[_facts_with(tmp_path, {0: (gib // 2, gib // 2), 1: (gib // 2, gib // 2)})], node_devices=NO_INVOKE)


def test_facts_taken_while_the_stacks_vms_run_do_not_refuse_the_replan(tmp_path):
    """The deployed VM holds every page of the pool, so free_hugepages is 0: the re-plan is accepted."""
    cfg = _hugepage_stack()
    gib = cfg["vms"][0]["memoryGib"]
    run_stack(cfg, host_facts=[_facts_with(tmp_path, {0: (gib // 2, 0), 1: (gib // 2, 0)})], node_devices=NO_INVOKE)


def test_two_hugepage_vms_on_one_node_are_counted_together_against_its_pool(tmp_path):
    """Two VMs that each fit node 1's pool but not together: the error names each VM's share."""
    cfg = _host_stack([["0000:86:00.0", "0000:87:00.0"], ["0000:bb:00.0"]], switches=[])
    for vm in cfg["vms"]:
        vm["memoryGib"] = 64
        vm["numa"] = {**vm.get("numa", {}), "hugepages1g": True}
    names = [vm["name"] for vm in cfg["vms"]]
    with pytest.raises(ConfigError) as e:
        run_stack(cfg, host_facts=[_facts_with(tmp_path, {0: (0, 0), 1: (100, 0)})], node_devices=NO_INVOKE)
    [issue] = e.value.issues
    assert issue.path == "hosts[0].numaNodes[1]"
    assert issue.message.startswith(f"host hgx-h100-1 NUMA node 1: VMs with numa.hugepages1g take 128 1 GiB hugepages there ({names[0]} 64 GiB, {names[1]} 64 GiB), ")
    assert "record a pool of 100 (hugepages-1048576kB/nr_hugepages), 28 short" in issue.message
    run_stack(cfg, host_facts=[_facts_with(tmp_path, {0: (0, 0), 1: (128, 0)})], node_devices=NO_INVOKE)


def test_facts_written_before_hugepages_were_recorded_still_load(tmp_path):
    path = _facts_with(tmp_path, None)
    facts = load_host_facts(str(path))
    assert all(n.hugepages_1g is None and n.free_hugepages_1g is None for n in facts.numa_nodes)
    run_stack(_hugepage_stack(), host_facts=[path], node_devices=NO_INVOKE)  # not checked without the count
    # facts that record only the free count (gpu-stack before the pool was recorded): loadable, not checked
    doc = json.loads(path.read_text())
    for node in doc["numaNodes"]:
        node["freeHugepages1g"] = 0
    path.write_text(json.dumps(doc))
    assert {n.free_hugepages_1g for n in load_host_facts(str(path)).numa_nodes} == {0}
    run_stack(_hugepage_stack(), host_facts=[path], node_devices=NO_INVOKE)
    assert {(n.hugepages_1g, n.free_hugepages_1g) for n in load_host_facts(str(SHARED)).numa_nodes} == {(0, 0)}


def test_the_script_records_each_nodes_pool_and_free_pages(tmp_path):
    box = HostSandbox(tmp_path, with_spec(captured_hgx_h100(), hugepages_1g=((0, 512, 0), (1, 480, 32))))
    nodes = {n["id"]: (n["hugepages1g"], n["freeHugepages1g"]) for n in box.facts()["numaNodes"]}
    assert nodes == {0: (512, 0), 1: (480, 32)}
