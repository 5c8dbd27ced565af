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
