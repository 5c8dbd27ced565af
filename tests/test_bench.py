"""tools/bench.py's floor: the same resources as the program registers, with nothing computed."""

from __future__ import annotations

import json

from tests.conftest import DEFAULT_SECRETS, run_stack
from tools import bench, mockrun


def test_floor_registers_the_same_resources_types_parents_and_input_sizes(dev):
    result = run_stack(dev)
    values = {f"gpu-stack:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in {**dev, **DEFAULT_SECRETS}.items()}
    floor = mockrun.run(values, [f"gpu-stack:{k}" for k in DEFAULT_SECRETS], program=bench.floor_program(result))
    shape = [(r.type, r.name, r.parent, r.custom) for r in result.resources]
    assert shape and [(r.type, r.name, r.parent, r.custom) for r in floor.resources] == shape
    assert sorted(u.rsplit("::", 1)[1] for u in floor.registered) == sorted(r.name for r in result.resources)
    for mine, bare in zip(result.resources, floor.resources):
        if mine.custom:
            assert len(bare.inputs["input"]) == len(json.dumps(mine.inputs, sort_keys=True, default=str))
            assert bare.properties == sorted({*mine.properties, "input"})


# --- the noise verdict (pure: made-up timings, nothing timed) ---

def test_an_effect_larger_than_the_spread_of_its_paired_turns_is_a_measurement():
    assert bench.noise_verdict([4.73, 4.80, 4.75], [4.60, 4.66, 4.64]) is None  # differences 0.13, 0.14, 0.11


def test_a_spread_larger_than_the_effect_is_called_noise():
    verdict = bench.noise_verdict([5.0, 9.0, 5.2], [4.9, 5.0, 5.1])  # differences 0.1, 4.0, 0.1: median 0.1, spread 3.9
    assert verdict is not None and "within the noise" in verdict and "+0.10 s" in verdict and "3.90 s" in verdict


def test_a_negative_slower_by_is_never_reported_as_a_measurement():
    # the case: under load the delayed runs came out 5.58 s faster
    verdict = bench.noise_verdict([4.0, 4.1, 4.2], [9.58, 9.7, 9.6], "preflight slower by")
    assert verdict is not None and verdict.startswith("preflight slower by -5.58 s is negative")


def test_one_turn_has_no_noise_to_compare_with():
    verdict = bench.noise_verdict([4.8], [4.6])
    assert verdict is not None and "--repeat" in verdict


def test_the_bench_fleet_is_a_valid_stack():
    """`make bench` measures a config the program accepts (it stopped at hosts[0].hostKey once that became required)."""
    from stacks.load import parse_stack_config

    for vms in (1, 8):
        parse_stack_config(bench.fleet_config(vms), {"sshPrivateKey", "grafanaAdminPassword"})


def test_the_bench_types_no_version_pin_of_its_own():
    """Kubernetes and the driver come from the catalog and the example stacks, so a bump there moves the bench too."""
    import re

    from tests.conftest import ROOT

    source = (ROOT / "tools" / "bench.py").read_text()
    assert not re.findall(r"\b\d+\.\d+\.\d+\b", source)
    raw = bench.fleet_config(1)
    kubernetes, driver = bench.pins()
    assert raw["kubernetes"]["version"] == kubernetes and raw["guest"]["nvidia"]["driverVersion"] == driver


def test_the_bench_follows_the_support_catalog(monkeypatch):
    from config import support

    monkeypatch.setattr(support, "KUBERNETES_NEWEST_PATCH", {(1, 35): ("1.35.9", "test"), (1, 37): ("1.37.2", "test")})
    # 1.37 is past what the default GPU Operator (v26.7.0) supports: the bench takes the newest one it does
    assert bench.fleet_config(1)["kubernetes"]["version"] == "1.35.9"
    monkeypatch.setattr(support, "KUBERNETES_NEWEST_PATCH", {(1, 36): ("1.36.9", "test")})
    assert bench.fleet_config(1)["kubernetes"]["version"] == "1.36.9"
