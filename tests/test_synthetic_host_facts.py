"""tests/support/host_facts.py: the facts the engine tests give the libvirt stacks (tests/engine/test_engine_preview.py
local_preview) are read by the program's own reader, say what the config says, and change the plan in
nothing but what the test changes itself (the libvirt providers' uri)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.catalog import GIB, MIB, device_model
from facts.host_facts import load_host_facts
from tests.support.host_facts import catalog_bar_sizes
from tests.support.host_facts import engine_stack_config, mock_plan, stack_host_facts
from tools.plan import resolve_scripts, stack_config

ROOT = Path(__file__).resolve().parents[1]
LIBVIRT_STACKS = ("dev", "fleet", "prod")
LOCAL = "qemu:///system"


@pytest.mark.parametrize("stack", LIBVIRT_STACKS)
def test_facts_say_what_the_config_says(stack, tmp_path):
    cfg = stack_config(*engine_stack_config(stack, LOCAL))
    paths = stack_host_facts(stack, tmp_path, LOCAL)
    assert sorted(load_host_facts(p).host for p in paths) == sorted({vm.host for vm in cfg.vms})
    for path in paths:
        facts = load_host_facts(path)
        host = next(h for h in cfg.hosts if h.name == facts.host)
        assert facts.iommu_enabled and facts.vfio_pci_available and facts.phys_addr_bits == host.phys_addr_bits
        assert {n.id: (n.cpus, n.memory_kib) for n in facts.numa_nodes} == {n.id: (n.cpu_ids, n.memory_gib * 1024 * 1024) for n in host.numa_nodes}
        configured = [(kind, d) for vm in cfg.vms if vm.host == host.name for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)) for d in devs]
        assert sorted(facts.devices) == sorted(d.address for _, d in configured)
        for kind, d in configured:
            dev = facts.devices[d.address]
            model = device_model(d.model)
            assert dev.node.group_members == (d.address,), "alone in its IOMMU group"
            assert dev.node.numa_node == d.numa_node and dev.driver == "vfio-pci"
            if model.pci_ids:
                assert f"10de:{dev.node.product_id:04x}" == model.pci_ids[0]
            if kind == "gpus":
                bar1 = int(d.bar1_gib * GIB) if d.bar1_gib is not None else model.bar1_bytes
                assert catalog_bar_sizes(dev.bars) == (bar1, model.other_64bit_bar_bytes)
            else:
                assert dev.bar64_bytes == (d.bar_mib * MIB if d.bar_mib is not None else model.other_64bit_bar_bytes)


@pytest.mark.parametrize("stack", LIBVIRT_STACKS)
def test_with_the_facts_and_the_local_uri_the_mock_plan_is_the_golden_but_for_the_uri(stack, tmp_path):
    """Why the engine test compares its preview with the golden plan, listing only the providers' uri as overridden."""
    plan_dir = ROOT / "tests" / "golden" / stack
    files = {str(p.relative_to(plan_dir)): p.read_text() for p in plan_dir.rglob("*") if p.is_file()}
    golden = {(r["type"], r["name"]): r for r in resolve_scripts(json.loads((plan_dir / "resources.json").read_text()), files)}
    local = {(r["type"], r["name"]): r for r in mock_plan(stack, libvirt_uri=LOCAL, host_facts=stack_host_facts(stack, tmp_path, LOCAL))}
    # a local URI makes each VM's autostart a local command instead of one over SSH to the hypervisor
    remote = {key for key in golden if key[0] == "command:remote:Command" and key[1].endswith("-autostart")}
    assert remote and {("command:local:Command", n) for _, n in remote} == {key for key in local if key[0] == "command:local:Command"}
    assert all(local[("command:local:Command", n)]["inputs"]["create"] == golden[(t, n)]["inputs"]["create"] for t, n in remote)
    golden = {k: v for k, v in golden.items() if k not in remote}
    local = {k: v for k, v in local.items() if k[0] != "command:local:Command"}
    assert set(local) == set(golden)
    changed = {(key, k) for key in golden for k in set(golden[key]["inputs"]) | set(local[key]["inputs"])
               if golden[key]["inputs"].get(k) != local[key]["inputs"].get(k)}
    changed |= {(key, f) for key in golden for f in golden[key] if f != "inputs" and golden[key][f] != local[key][f]}
    providers = {key for key in golden if key[0] == "pulumi:providers:libvirt"}
    assert providers and changed == {(key, "uri") for key in providers}
    assert all(local[key]["inputs"]["uri"] == LOCAL for key in providers)
