"""Every golden stack's own objects on a real control plane (Kubernetes 1.36.5 from engine/), and the model beside it.

For each tests/golden/<stack>: KWOK nodes made from the plan's nodes, every object gpu-stack applies itself
server-side applied (tests/k8s/reality.py says what, and what is out of scope). The API server accepts every
object; the real scheduler places every workload gpu-stack renders on the nodes the convergence model allows;
every Kubernetes rule of convergence/analysis.py gives the verdict the real control plane gives.
"""

from __future__ import annotations

import pytest

from convergence.analysis import Plan
from tests.conftest import ROOT
from tests.k8s.reality import Case, apply_plan, format_table, placement_mismatches, table
from tests.test_convergence import config

GOLDEN = ROOT / "tests" / "golden"
STACKS = sorted(p.name for p in GOLDEN.iterdir() if (p / "resources.json").is_file())


@pytest.mark.parametrize("stack", STACKS)
def test_golden_stack_on_a_real_control_plane(control_plane, stack):
    case = Case(stack, Plan.from_dir(GOLDEN / stack), config(stack))
    real = apply_plan(control_plane, case)
    assert real.applied, f"{stack}: no objects applied"
    refused = {oid: a.message for oid, a in real.applied.items() if not a.accepted}
    assert not refused, f"{stack}: the API server refused {refused}"
    assert real.placed, f"{stack}: no workload gpu-stack renders was placed"
    assert not placement_mismatches(case, real), placement_mismatches(case, real)
    for oid, p in real.placed.items():  # the goldens converge: every workload runs where the model says
        assert p.nodes and not p.pending and not p.refused, f"{stack}: {oid}: {p}"
    rows = table(case, real)
    print(f"\n{stack}: model against the real control plane\n{format_table(rows)}")
    assert {r.rule for r in rows} >= {"scheduling", "namespaces"}
    assert all(r.agree for r in rows), format_table([r for r in rows if not r.agree])
