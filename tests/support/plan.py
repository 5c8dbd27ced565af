"""tools/plan.run_plan as the tests call it: the plan's directory and its summary."""

from __future__ import annotations

from pathlib import Path

from tools.plan import ROOT, run_plan


def write_plan(stack: str, out_root: Path, root: Path = ROOT, facts: list[str] | None = None, facts_dir: str | None = None,
               base: str | None = None) -> tuple[Path, str]:
    result = run_plan(stack, out_root, root, facts, facts_dir, base)
    return result.out, result.summary
