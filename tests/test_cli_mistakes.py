"""Every command-line mistake is one line naming the argument, exit status 2, never a traceback (issue 23)."""

from __future__ import annotations

from pathlib import Path

import pytest

from doctor import command as doctor
from tools import plan

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "tests" / "fixtures" / "minimal"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("out,words", [
    (str(ROOT / "README.md"), "is a file, not a directory"),
    ("/proc/nope", "cannot make this directory"),
])
def test_plan_out_that_cannot_be_a_directory(capsys, out, words):
    assert plan.main(["minimal", "--stack-dir", str(MINIMAL), "--out", out]) == 2
    line = _one_line(capsys)
    assert f"--out {out}: " in line and words in line


def test_plan_unknown_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        plan.main(["minimal", "--outt", "x"])
    assert e.value.code == 2
    assert "--outt" in _one_line(capsys)


@pytest.mark.parametrize("content,words", [
    (None, "no such file"),
    ("", "the file is empty"),
    ("[1, 2]", "holds a list, not a JSON object"),
    ("{oops", "not JSON (line 1"),
])
def test_doctor_outputs_file_mistakes(tmp_path, capsys, content, words):
    path = tmp_path / "outputs.json"
    if content is not None:
        path.write_text(content)
    rc = doctor.main(["minimal", "--stack-dir", str(MINIMAL), "--outputs", str(path), "--ssh-key", str(MINIMAL / "Pulumi.minimal.yaml")])
    assert rc == 2
    line = _one_line(capsys)
    assert f"--outputs {path}: " in line and words in line and "pulumi stack output --json --show-secrets" in line


def test_doctor_without_the_pulumi_cli_says_so(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert doctor.main(["minimal", "--stack-dir", str(MINIMAL)]) == 2
    line = _one_line(capsys)
    assert "the Pulumi CLI is not on PATH" in line and "log in" not in line


def test_doctor_with_nothing_deployed_says_so(capsys, monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(doctor, "pulumi_outputs", lambda stack, root: ({}, set()))
    assert doctor.main(["minimal", "--stack-dir", str(MINIMAL)]) == 2
    assert "nothing is deployed yet" in _one_line(capsys)
