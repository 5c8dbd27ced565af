"""Drift (issue 26 item 4): the plan recorded on each Node, written by the guest phases in the sandbox.

The bootstrap's verify records what it installed and verified and the GPUs (UUID@bus id) where the node has no
record yet; upgrade-check records the configured versions each time it runs. Both are idempotent, and the
rendered scripts depend on the config alone. The doctor's drift checks are tests/test_doctor.py's.
"""

from __future__ import annotations

import copy

from render.guest_scripts import render_script
from tests.test_upgrades import bumped, converged_node, phases_of, run_upgrade, stack_file, upgrade_of

NODE = "gpu-dev-0"


def drift_records(sb) -> dict[str, str]:
    return {k: v for k, v in sb.state["node"].get("annotations", {}).items() if k.startswith(("gpu-stack.io/expected-", "gpu-stack.io/gpu-uuids"))}


def annotate_calls(sb) -> list[str]:
    return [c for c in sb.mutating() if c.startswith("kubectl annotate") and ("expected-" in c or "gpu-uuids" in c)]


def verify_of(raw: dict):
    _, phases = phases_of(raw)
    return next(p for p in phases if p.name == "verify")


def test_bootstrap_records_the_installed_versions_and_the_gpus_and_a_rerun_changes_nothing(tmp_path):
    raw = stack_file("dev")
    sb = converged_node(tmp_path, raw)
    cfg, _ = phases_of(raw)
    assert drift_records(sb) == {
        "gpu-stack.io/expected-driver": cfg.guest.nvidia.driver_version,
        "gpu-stack.io/expected-toolkit": cfg.guest.container_runtime.nvidia_toolkit_version,
        "gpu-stack.io/expected-kubernetes": cfg.kubernetes.version,
        # the stub's `nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,...`: one GPU at the guest's 01:00.0
        "gpu-stack.io/gpu-uuids": "GPU-00000000-0000-0000-0000-000000000000@00000000:01:00.0",
    }
    r = sb.run(verify_of(raw))
    assert r.returncode == 0, r.stderr
    assert annotate_calls(sb) == [], "idempotent: nothing to write on a node that has its record"
    assert "--- gpu-inventory ---\n0, NVIDIA H800, GPU-00000000-0000-0000-0000-000000000000, 00000000:01:00.0" in r.stdout


def test_a_rerun_of_verify_never_records_a_drifted_node_as_planned(tmp_path):
    """A gpu-stack release re-runs verify: what the node has recorded stays, whatever the node now runs."""
    raw = stack_file("dev")
    sb = converged_node(tmp_path, raw)
    notes = sb.state["node"]["annotations"]
    sb.set_state(node={**sb.state["node"], "annotations": {**notes, "gpu-stack.io/expected-toolkit": "1.17.0",
                                                            "gpu-stack.io/gpu-uuids": "GPU-11111111-0000-0000-0000-000000000000@00000000:01:00.0"}})
    assert sb.run(verify_of(raw)).returncode == 0
    assert annotate_calls(sb) == []
    assert drift_records(sb)["gpu-stack.io/expected-toolkit"] == "1.17.0"
    assert drift_records(sb)["gpu-stack.io/gpu-uuids"].startswith("GPU-11111111-")


def test_upgrade_check_records_the_configured_versions_once(tmp_path):
    """A toolkit bump: upgrade-check writes the new planned version before the rollout; run again, it writes nothing."""
    raw = stack_file("dev")
    sb = converged_node(tmp_path, raw)
    new = bumped(raw, toolkit="1.17.9")
    check = [p for p in upgrade_of(new) if p.name == "upgrade-check"]
    r = run_upgrade(sb, check)["upgrade-check"]
    assert r.returncode == 0, r.stderr
    assert annotate_calls(sb) == [f"kubectl annotate --overwrite node {NODE} gpu-stack.io/expected-toolkit=1.17.9"]
    assert drift_records(sb)["gpu-stack.io/expected-toolkit"] == "1.17.9"
    sb.clear_calls()
    assert run_upgrade(sb, check)["upgrade-check"].returncode == 0
    assert annotate_calls(sb) == []


def test_the_recording_scripts_depend_on_the_config_alone():
    """Byte-identical for the same config, and verify's text does not carry versions: a version bump re-runs the upgrade
    path only (tests/test_upgrades.py rerun sets), never the bootstrap's verify."""
    raw = stack_file("dev")
    texts = lambda cfg: {p.name: render_script(p.name, p.params) for p in [verify_of(cfg), *upgrade_of(cfg)]}  # noqa: E731
    assert texts(raw) == texts(copy.deepcopy(raw))
    for bump in (dict(driver="570.195.03"), dict(toolkit="1.17.9"), dict(kubernetes="1.33.2")):
        assert texts(bumped(raw, **bump))["verify"] == texts(raw)["verify"], bump
        assert texts(bumped(raw, **bump))["upgrade-check"] != texts(raw)["upgrade-check"], bump
