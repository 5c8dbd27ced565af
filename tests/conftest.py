"""Shared fixtures: stack configs as dicts, the mock-run helper, validator lookup."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tools import mockrun

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference"
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_validator(message: str) -> None:
    """Skip on a workstation that lacks a validator; fail in CI, which must have them all."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """Path of a validator binary."""
    path = shutil.which(name)
    if path is None:
        missing_validator(f"{name} is not installed (.ci/run installs it; README, Tests and validators)")
    return path


def require_reference(name: str) -> Path:
    """Upstream reference data kept in tests/reference/ (README there gives the provenance)."""
    path = REFERENCE / name
    if not path.exists():
        pytest.fail(f"{path} is missing; tests/reference/ is part of the repository")
    return path


def stack_file(stack: str) -> dict:
    """`config:` of Pulumi.<stack>.yaml with the `gpu-stack:` prefix removed."""
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in doc.items()}


DEFAULT_SECRETS = {"sshPrivateKey": "test-ssh-private-key", "grafanaAdminPassword": "test-grafana-password"}


def run_stack(raw: dict, *, secrets: dict | None = None, preview: bool = True, stack: str = "test", node_devices=None, outputs=None, on_register=None,
              host_facts=None, withhold=None, **vsphere) -> mockrun.RunResult:
    """Run the program on a raw config dict (no prefix) plus secrets, under mocks."""
    secrets = DEFAULT_SECRETS if secrets is None else secrets
    values = {f"gpu-stack:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    values.update({f"gpu-stack:{k}": v for k, v in secrets.items()})
    return mockrun.run(values, [f"gpu-stack:{k}" for k in secrets], stack=stack, preview=preview, node_devices=node_devices, outputs=outputs,
                       on_register=on_register, host_facts=host_facts, withhold=withhold, **vsphere)


@pytest.fixture
def dev() -> dict:
    return copy.deepcopy(stack_file("dev"))


def seed000_host() -> dict:
    """Seed 000's hypervisor: two sockets, 2 x 48 cores with SMT, 2 x 1 TiB."""
    return {
        "name": "hgx-1",
        "libvirtUri": "qemu:///system",
        "numaNodes": [
            {"id": 0, "cpus": "0-47,96-143", "memoryGib": 1024},
            {"id": 1, "cpus": "48-95,144-191", "memoryGib": 1024},
        ],
        "reservedCpus": "0,48,96,144",
        "physAddrBits": 46,
        "baseImage": {"source": "/var/lib/libvirt/images/jammy-server-cloudimg-amd64.img"},
    }


SEED000_GPUS = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0", "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]
SEED000_SWITCHES = ["0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"]


def hgx_board(model: str = "H100-SXM5-80GB", switches: int = 4, switch_model: str | None = None) -> tuple[list[dict], list[dict]]:
    """One whole NVSwitch baseboard for vms[].gpus and vms[].nvswitches: 8 GPUs and the board's NVSwitches
    (4 for HGX H100/H800/H200/H20, 6 for HGX A100: config/catalog.py NVSWITCH_BOARD), all on NUMA node 0."""
    gpus = [{"address": a, "model": model, "numaNode": 0} for a in SEED000_GPUS]
    nvswitches = [{"address": f"0000:{0x05 + i:02x}:00.0", "numaNode": 0, **({"model": switch_model} if switch_model else {})} for i in range(switches)]
    return gpus, nvswitches


def seed000_burn_in() -> dict:
    """burnIn for seed 000's 8 x H800: the catalog has no sourced all-reduce figure for the H800 (reduced NVLink), so the
    burn-in gate refuses the node without one (issue 27); prod, which runs seed 000's board, gives it (Pulumi.prod.yaml).
    Tests that build seed 000 into another stack and are not about burn-in take prod's."""
    return copy.deepcopy(stack_file("prod")["burnIn"])


def seed000_vm() -> dict:
    """8x H800 + 4 NVSwitch across two NUMA nodes, 256 GiB, the old MAC."""
    return {
        "name": "ubuntu-gpu",
        "host": "hgx-1",
        "vcpus": 64,
        "memoryGib": 256,
        "network": {"mac": "52:54:00:a9:a2:11", "address": "192.168.122.146"},
        "gpus": [{"address": a, "model": "H800-SXM5-80GB", "numaNode": 0 if i < 4 else 1} for i, a in enumerate(SEED000_GPUS)],
        "nvswitches": [{"address": a, "numaNode": 0 if i < 2 else 1} for i, a in enumerate(SEED000_SWITCHES)],
    }
