"""README claims checked against what the tools do today (issue 23, "README claims that are false today")."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

README = (ROOT / "README.md").read_text()
GOLDEN = ROOT / "tests" / "golden"


def _make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    make = require_tool("make")
    # in the checkout, -o takes the venv stamp as up to date (never reinstall from here; its mtimes say nothing)
    old = ["-o", ".venv/.installed"] if cwd == ROOT else []
    return subprocess.run([make, "--no-print-directory", *old, *args], cwd=cwd, capture_output=True, text=True)


def _stated_exit(command: str) -> int:
    m = re.search(rf"`{re.escape(command)}`\s+exits? (\d)", README) or re.search(rf"`{re.escape(command)}`\s+exit (\d)", README)
    assert m, f"the README states no exit status for `{command}`"
    return int(m.group(1))


def test_bad_config_exit_status_is_the_one_the_readme_states(tmp_path):
    stack_dir = tmp_path / "stacks"
    stack_dir.mkdir()
    (stack_dir / "Pulumi.bad.yaml").write_text("config:\n  gpu-stack:vmz: []\n")
    tool = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "tools.plan", "bad", "--stack-dir", str(stack_dir),
                           "--out", str(tmp_path / "plan")], cwd=ROOT, capture_output=True, text=True)
    assert "gpu-stack:vmz" in tool.stderr and "Traceback" not in tool.stderr
    assert tool.returncode == _stated_exit("python -m tools.plan")
    through_make = _make("plan", "STACK=no-such-stack-here")
    assert "gpu-stack:(file)" in through_make.stderr and "no stack file Pulumi.no-such-stack-here.yaml" in through_make.stderr
    assert through_make.returncode == _stated_exit("make plan")


def _fresh_clone_files(tmp_path: Path) -> Path:
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_first_run_needs_the_package_index_and_the_readme_says_so(tmp_path):
    """`make plan` depends on the venv, which pip installs from the package index: "no network" only after that."""
    dry = _make("-n", "plan", cwd=_fresh_clone_files(tmp_path))  # as on a fresh clone: no .venv yet
    assert re.search(r"pip install .*-r requirements-dev\.txt", dry.stdout), dry.stdout
    assert "The first run needs the package index" in README
    assert not re.search(r"needs no Pulumi CLI, network", README)


def test_make_venv_says_what_it_installs_and_shows_progress(tmp_path):
    dry = _make("-n", "venv", cwd=_fresh_clone_files(tmp_path))
    install = next(line for line in dry.stdout.splitlines() if "pip install" in line)
    assert not re.search(r"(^|\s)-q(\s|$)|--quiet", install), install  # pip lists each package as it goes
    said = [line for line in dry.stdout.splitlines() if line.startswith("echo ")]
    assert said and "package index" in said[0] and "minutes" in said[0], dry.stdout


def test_blocked_provider_plugins_are_the_ones_engine_toml_lists():
    manifest = tomllib.loads((ROOT / "engine" / "engine.toml").read_text())
    blocked = {e["name"].removeprefix("pulumi-resource-"): e["wants"] for e in manifest["blocked"] if e["name"].startswith("pulumi-resource-")}
    m = re.search(r"all (\w+) provider plugins \(([^)]*)\)", " ".join(README.split()))
    assert m, "the README no longer lists the blocked provider plugins"
    words = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}
    assert words[m.group(1)] == len(blocked)
    assert dict(item.rsplit(" ", 1) for item in m.group(2).split(", ")) == blocked


def _written_list() -> list[str]:
    """The backticked paths at the start of each item of the README's "It writes:" list (and in the item's text)."""
    section = README.split("needs no network. It writes:", 1)[1].split("\nReviewers read it", 1)[0]
    paths = re.findall(r"`([A-Za-z0-9_<>.-]+(?:/[A-Za-z0-9_<>.-]+)*\.(?:json|xml|xslt|yaml|sh|meta-data))`", section)
    assert paths, section
    return paths


def _pattern(path: str) -> re.Pattern:
    body = re.sub(r"<[^>]+>", "[^/]+", re.escape(path).replace(r"\<", "<").replace(r"\>", ">"))
    return re.compile(body if "/" in path else rf"(?:[^/]+/)*{body}")


@pytest.mark.parametrize("stack", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_every_file_make_plan_writes_is_in_the_readme_list(stack):
    """tests/golden/<stack>/ is what tools/plan.py writes (tests/test_golden_plans.py keeps them equal)."""
    patterns = [_pattern(p) for p in _written_list()]
    files = [str(p.relative_to(GOLDEN / stack)) for p in (GOLDEN / stack).rglob("*") if p.is_file()]
    assert "rollout.json" in files and "resources.json" in files
    missing = [f for f in files if not any(p.fullmatch(f) for p in patterns)]
    assert not missing, f"make plan writes files the README's list does not name: {missing}"


def test_every_item_of_the_readme_list_is_written_by_some_stack():
    files = [str(p.relative_to(d)) for d in GOLDEN.iterdir() if d.is_dir() for p in d.rglob("*") if p.is_file()]
    unused = [path for path in _written_list() if not any(_pattern(path).fullmatch(f) for f in files)]
    assert not unused, f"the README lists files no stack's plan writes: {unused}"
