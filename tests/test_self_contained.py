"""A user's clone has nothing beside it: no tracked file may point at ../shared or this workshop's paths."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import ROOT

OUTSIDE = re.compile(r"\.\./shared\b|/work/(shared|main|wt-)")


def _tracked() -> list[str]:
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    return [p for p in proc.stdout.split("\0") if p and p != "tests/test_self_contained.py"]


def test_no_tracked_file_reads_outside_the_repository():
    offenders = []
    for rel in _tracked():
        try:
            text = (ROOT / rel).read_text()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        offenders += [f"{rel}:{n}: {line.strip()[:120]}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, "\n".join(offenders)
