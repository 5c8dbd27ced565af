"""The two host-facts collectors share scripts/host-facts-common.sh: as run from a checkout, as copied to a host.

scripts/host-facts.sh (libvirt) and hypervisors/proxmox/host-facts.sh (a Proxmox VE node) source the common part
(device selection, NUMA, SMT, IOMMU, vfio-pci, the JSON writer). docs/OPERATIONS.md tells the operator to run a
collector from a checkout, or to copy it to the host together with host-facts-common.sh, into one directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool
from tests.support.host_sandbox import PVE_SCRIPT, SCRIPT, HostSandbox, captured_hgx_h100, pve_sandbox

COMMON = ROOT / "scripts" / "host-facts-common.sh"


def _sandbox(kind: str, tmp: Path) -> HostSandbox:
    return HostSandbox(tmp, captured_hgx_h100()) if kind == "libvirt" else pve_sandbox(tmp)


def _copied(script: Path, to: Path, common: bool) -> Path:
    """The collector as `scp` leaves it on a host: one flat directory, under the name the operator chose."""
    to.mkdir()
    target = to / "host-facts.sh"
    shutil.copy(script, target)
    if common:
        shutil.copy(COMMON, to / COMMON.name)
    return target


@pytest.mark.parametrize("kind,script", [("libvirt", SCRIPT), ("pve", PVE_SCRIPT)])
def test_a_collector_copied_with_the_common_part_writes_what_it_writes_in_the_checkout(kind, script, tmp_path):
    box = _sandbox(kind, tmp_path / "host")
    here = box.run("--host", "gpu-a", "0000:11:00.0")
    assert here.returncode == 0, here.stderr
    box.script = _copied(script, tmp_path / "copied", common=True)
    there = box.run("--host", "gpu-a", "0000:11:00.0")
    assert there.returncode == 0, there.stderr
    assert there.stdout == here.stdout and '"0000:12:00.0"' in there.stdout  # the group's other GPU came along


@pytest.mark.parametrize("kind,script", [("libvirt", SCRIPT), ("pve", PVE_SCRIPT)])
def test_a_collector_copied_alone_says_what_to_copy_and_runs_nothing(kind, script, tmp_path):
    box = _sandbox(kind, tmp_path / "host")
    box.script = _copied(script, tmp_path / "copied", common=False)
    proc = box.run()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"host-facts.sh: {box.script.parent}/host-facts-common.sh not found: copy scripts/host-facts-common.sh next to {box.script}"
    ]
    assert box.calls == []


def test_the_common_part_is_shellcheck_clean():
    """shellcheck reports only on the files it is given, not on what they source: the collectors' own checks
    (tests/test_host_facts.py, tests/test_proxmox.py) read this file for its definitions, this one checks it."""
    proc = subprocess.run([require_tool("shellcheck"), str(COMMON)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
