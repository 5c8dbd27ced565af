"""`make plan`: offline, deterministic, secret-free, and failing on bad config."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT


def plan(tmp_path: Path, stack: str = "dev", stack_dir: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.plan", stack, "--out", str(tmp_path / "plan"), "--stack-dir", str(stack_dir)],
        cwd=ROOT, capture_output=True, text=True,
    )


def assert_planned(proc: subprocess.CompletedProcess) -> None:
    """The plan was written and the convergence check (convergence/analysis.py) passed."""
    assert proc.returncode == 0, proc.stderr
    assert "convergence: ok (" in proc.stdout


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_plan_dev_writes_resources_and_artifacts(tmp_path):
    proc = plan(tmp_path)
    assert_planned(proc)
    out = tmp_path / "plan" / "dev"
    resources = json.loads((out / "resources.json").read_text())
    assert {"type", "name", "parent", "inputs", "options"} <= set(resources[0])
    assert any(r["type"] == "libvirt:index/domain:Domain" for r in resources)
    for name in ("domain.xslt", "domain.pre-xslt.xml", "domain.xml", "cloud-init.meta-data"):
        assert (out / "vms" / "gpu-dev-0" / name).stat().st_size > 0
    assert "vm gpu-dev-0:" in proc.stdout and "hole64 128G" in proc.stdout


def test_plan_is_byte_identical_across_runs(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert_planned(plan(first))
    assert_planned(plan(second))
    assert tree_digest(first / "plan") == tree_digest(second / "plan")


def test_plan_holds_no_secret_values(tmp_path):
    assert_planned(plan(tmp_path))
    out = tmp_path / "plan" / "dev"
    text = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "plan-placeholder" not in text
    assert "PRIVATE KEY" not in text
    cloudinit = next(r for r in json.loads((out / "resources.json").read_text()) if r["name"] == "gpu-dev-0-cloudinit")
    assert cloudinit["inputs"]["userData"] == "[secret]"


def test_bad_config_exits_non_zero_and_names_the_key(tmp_path):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["gpu-stack:vms"][0]["gpus"][0]["address"] = "0000:3b:00"
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump(doc))
    proc = plan(tmp_path, "bad", tmp_path)
    assert proc.returncode == 1
    assert "gpu-stack:vms[0].gpus[0].address" in proc.stderr
    assert not (tmp_path / "plan" / "bad").exists()


def test_unknown_stack_is_reported(tmp_path):
    proc = plan(tmp_path, "nope")
    assert proc.returncode != 0 and "Pulumi.dev.yaml" not in proc.stdout
    assert "stacks here" in proc.stderr


def test_secure_values_in_the_stack_file_become_placeholders(tmp_path):
    """A stack file with encrypted secrets plans without the passphrase; the ciphertext never reaches the plan."""
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["encryptionsalt"] = "v1:Zm9vYmFy:v1:c2FsdHNhbHQ=:ZmFrZQ=="
    doc["config"]["gpu-stack:sshPrivateKey"] = {"secure": "v1:AAAAciphertext-ssh"}
    doc["config"]["gpu-stack:grafanaAdminPassword"] = {"secure": "v1:AAAAciphertext-grafana"}
    (tmp_path / "Pulumi.enc.yaml").write_text(yaml.safe_dump(doc))
    proc = plan(tmp_path, "enc", tmp_path)
    assert_planned(proc)
    text = "".join(p.read_text() for p in (tmp_path / "plan" / "enc").rglob("*") if p.is_file())
    assert "ciphertext" not in text and "plan-placeholder" not in text
    secret = next(r for r in json.loads((tmp_path / "plan" / "enc" / "resources.json").read_text()) if r["name"] == "monitoring-grafana-admin")
    assert secret["inputs"]["stringData"] == "[secret]"


def test_plan_prod_lists_the_pod_network_storage_and_readiness_gates(tmp_path):
    proc = plan(tmp_path, "prod")
    assert proc.returncode == 0, proc.stderr
    assert "helm release calico: tigera-operator v3.32.1 in namespace tigera-operator" in proc.stdout
    assert "pod network: tigera-operator v3.32.1 (Calico), pool 10.244.0.0/16" in proc.stdout
    assert "storage: Prometheus claim 200Gi on StorageClass local-path (local-path-provisioner v0.0.37" in proc.stdout
    gates = next(line for line in proc.stdout.splitlines() if "readiness gates" in line)
    assert "node ubuntu-gpu Ready, allocatable nvidia.com/gpu = 8" in gates and "Job gpu-stack-smoke/gpu-smoke-test succeeds" in gates
    out = tmp_path / "plan" / "prod"
    assert (out / "helm" / "calico.values.yaml").exists()
    assert (out / "manifests" / "local-path-storage-objects" / "storageclass-local-path.yaml").exists()
    assert "scripts/guest/readiness.sh" in (out / "guest" / "readiness-gate.sh").read_text()


def test_resources_json_references_each_script_file_and_resolves_to_what_the_program_sent(dev):
    """A command's script is in guest/<command>[.update|.delete].sh, not inlined in resources.json (a driver bump
    was a 194 KB diff of 25 KB lines); resolving the references gives back exactly the inputs the program sent."""
    from tests.conftest import run_stack
    from tools import plan as plan_tool

    result = run_stack(dev)
    text = plan_tool.resources_json(result)
    rows, files = json.loads(text), plan_tool.artifacts(result)
    commands = [r for r in rows if r["type"] == "command:remote:Command"]
    assert commands
    referenced = set()
    for row in commands:
        for key in ("create", "update", "delete"):
            value = row["inputs"].get(key)
            if isinstance(value, str) and value != "true":
                assert "#!/usr/bin/env bash" not in value and len(value) < 1000, f"{row['name']}.{key} inlines its script"
                referenced |= set(plan_tool.SCRIPT_REFERENCE.findall(value))
    assert referenced == {p for p in files if p.startswith("guest/")}
    sent = {r.name: plan_tool.sanitize(r.inputs) for r in result.resources}
    assert {r["name"]: r["inputs"] for r in plan_tool.resolve_scripts(rows, files)} == sent


def test_the_backends_secret_marker_is_the_sdks():
    """hypervisors/shared.py spells how the engine marks a secret (a backend's plan_files unwraps vSphere's extraConfig with
    it); the pinned SDK's own constants (pulumi/runtime/rpc.py) are the consumer, and tools/mockrun.py builds secrets with them."""
    from pulumi.runtime import rpc

    from hypervisors.shared import SECRET_SIG, SECRET_SIG_KEY, unwrap_secret
    from tools import mockrun

    assert (SECRET_SIG_KEY, SECRET_SIG) == (rpc._special_sig_key, rpc._special_secret_sig) == (mockrun.SECRET_SIG, SECRET_SIG)
    assert unwrap_secret({SECRET_SIG_KEY: SECRET_SIG, "value": {"a": 1}}) == {"a": 1}
    assert unwrap_secret({"value": 1}) == {"value": 1}
