"""Every stack's plan matches the reviewed golden copy in tests/golden/<stack>/.

After an intended change run `make golden` and review `git diff tests/golden`:
that diff is what the change does to every environment.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.plan import write_plan

GOLDEN = ROOT / "tests" / "golden"
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_stack_has_a_golden_plan():
    assert STACKS == sorted(p.name for p in GOLDEN.iterdir()), "run `make golden` after adding or removing a stack"


@pytest.mark.parametrize("stack", STACKS)
def test_plan_matches_golden(stack, tmp_path):
    facts_dir = ROOT / "hosts"  # as `make golden` and `make plans`: hosts/<host>.facts.json where a host has one
    out, _ = write_plan(stack, tmp_path, facts_dir=str(facts_dir) if facts_dir.is_dir() else None)
    got, want = tree(out), tree(GOLDEN / stack)
    problems = []
    for name in sorted(set(got) | set(want)):
        if got.get(name) != want.get(name):
            diff = difflib.unified_diff(want.get(name, "").splitlines(), got.get(name, "").splitlines(),
                                        f"golden/{stack}/{name}", f"plan/{stack}/{name}", lineterm="", n=2)
            problems.append("\n".join(list(diff)[:60]))
    assert not problems, "plan differs from tests/golden (run `make golden` if intended):\n" + "\n".join(problems)
