"""A user's clone has nothing beside it: no tracked file may point at the workshop's shared folder or its paths.

The patterns are assembled from parts, so that this file holds no such path
itself and needs no exemption.
"""

from __future__ import annotations

import os
import re
import subprocess

from tests.conftest import ROOT

SHARED = ".." + "/shared"
WORKSHOP = "/" + "work/"
OUTSIDE = re.compile(re.escape(SHARED) + r"\b|" + re.escape(WORKSHOP))
SKIP_DIRS = {".git", ".venv", "node_modules", "build", "__pycache__", ".pytest_cache", ".hypothesis"}


def _files() -> list[str]:
    """The tracked files; without git (a source tarball), every file outside build and tool folders."""
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 0:
        return [p for p in proc.stdout.split("\0") if p]
    found = []
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        found += [os.path.relpath(os.path.join(top, n), ROOT) for n in names]
    return found


def test_no_file_reads_outside_the_repository():
    offenders = []
    for rel in _files():
        try:
            text = (ROOT / rel).read_text()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        offenders += [f"{rel}:{n}: {line.strip()[:120]}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, "\n".join(offenders)


def test_the_pattern_catches_both_kinds_of_path():
    assert OUTSIDE.search("see " + SHARED + "/reference/captures/README.md")
    assert OUTSIDE.search("cp " + WORKSHOP + ".library/env/x.tsv .")
    assert not OUTSIDE.search("tests/fixtures/lspci/PROVENANCE.md and ../docs/FIELD-FACTS.md")
