"""Every copied capture under tests/fixtures/ is the byte-for-byte file its PROVENANCE.md names (sha256)."""

from __future__ import annotations

import hashlib
import re

import pytest

from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
PINNED = [
    (folder.name, name, digest)
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "PROVENANCE.md").exists())
    for name, digest in re.findall(r"## `([^`]+)`\s+sha256 `([0-9a-f]{64})`", (folder / "PROVENANCE.md").read_text())
]


def test_provenance_pins_the_copied_captures():
    assert {folder for folder, _, _ in PINNED} >= {"nvidia-smi", "dcgm-exporter", "systemd", "burn-in"}
    assert len(PINNED) >= 20


@pytest.mark.parametrize(("folder", "name", "digest"), PINNED, ids=[f"{f}/{n}" for f, n, _ in PINNED])
def test_capture_matches_its_pinned_sha256(folder, name, digest):
    assert hashlib.sha256((FIXTURES / folder / name).read_bytes()).hexdigest() == digest


def test_every_capture_file_has_a_provenance_entry():
    for folder in ("nvidia-smi", "dcgm-exporter", "systemd", "burn-in"):
        named = {n for f, n, _ in PINNED if f == folder} | {"PROVENANCE.md", "seed001-p100-535.261.03.txt"}
        assert {p.name for p in (FIXTURES / folder).iterdir()} <= named, folder
