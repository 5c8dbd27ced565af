"""The program under the real Pulumi engine (the CLI from `make engine`), not the mock monitor.

Each test makes a throwaway stack in a temporary local file backend (tools.engine.workspace):
the stack's own config, the passphrase secrets provider, and no network.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from tools.engine import TEST_PASSPHRASE, Outcome, isolated, manifest, operate, workspace
from tools.plan import resolve_scripts

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
SECRET = "engine-test-secret-5f0c2a9e"  # grepped for in what the engine writes


def test_cli_is_the_pinned_release(engine):
    cli = next(b for b in manifest()["binary"] if b["name"] == "pulumi")
    out = subprocess.run([str(engine / "pulumi"), "version"], capture_output=True, text=True, check=True,
                         env={"PULUMI_SKIP_UPDATE_CHECK": "true", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == f"v{cli['version']}"


def preview(stack: str, engine: Path, **kwargs) -> Outcome:
    """A real preview of a fresh throwaway stack, in a process of its own (tools.engine.isolated)."""
    return isolated(operate, stack, str(engine), "preview", **kwargs)


def test_bad_config_fails_naming_the_key_without_a_traceback_and_registers_nothing(engine):
    """The promise the mock harness makes (ConfigError before any resource), kept by the real engine."""
    out = preview("dev", engine, config_overrides={"gpu-stack:vmz": [{"name": "typo"}]})
    text = out.stdout + out.error
    assert not out.ok
    assert "gpu-stack:vmz" in text, text
    assert "Traceback" not in text + "".join(m for _, m in out.diagnostics), text
    assert set(out.registered) <= {"pulumi:pulumi:Stack"}, out.registered
    assert any("gpu-stack:vmz" in m for s, m in out.diagnostics if s == "error"), out.diagnostics


@pytest.mark.parametrize("stack", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_stack_config_loads_under_the_real_engine(engine, stack):
    """The engine hands the program Pulumi.<stack>.yaml itself (structured values serialized by
    the CLI, not by tools/mockrun.py): the program must get past config and start registering
    resources. It may stop only at a provider plugin that engine/engine.toml records as blocked."""
    blocked = {e["name"]: e["wants"] for e in manifest().get("blocked", [])}
    out = preview(stack, engine)
    text = out.stdout + out.error + "".join(m for _, m in out.diagnostics)
    assert "Traceback" not in text and "invalid stack config" not in text, text
    assert "pulumi:pulumi:Stack" in out.registered + re.findall(r"pulumi:pulumi:Stack", out.stdout), text
    if out.ok:
        return
    # the engine reports it as the provider resource's diagnostic, or on stderr, depending on timing
    errors = [m for s, m in out.diagnostics if s == "error"] + [line for line in out.error.splitlines() if line.strip()]
    assert errors, text
    for message in errors:
        m = re.search(r"no resource plugin '(pulumi-resource-[a-z0-9-]+)' found in the workspace at version v(\S+)", message)
        assert m, f"the real engine stopped for another reason: {message}"
        assert blocked.get(m.group(1)) == m.group(2), f"{m.group(1)} v{m.group(2)} is not a recorded blocked plugin"


def test_secrets_are_ciphertext_in_the_stack_file_and_read_back(engine):
    with workspace("dev", engine, secrets={"grafanaAdminPassword": SECRET}) as ws:
        text = (Path(ws.stack.workspace.work_dir) / "Pulumi.dev.yaml").read_text()
        doc = yaml.safe_load(text)
        assert SECRET not in text
        assert set(doc["config"]["gpu-stack:grafanaAdminPassword"]) == {"secure"}
        assert doc["encryptionsalt"]
        assert ws.stack.get_config("gpu-stack:grafanaAdminPassword").value == SECRET
        ws.env["PULUMI_CONFIG_PASSPHRASE"] = TEST_PASSPHRASE + "-wrong"
        bad = ws.cli("config", "get", "gpu-stack:grafanaAdminPassword", check=False)
        assert bad.returncode != 0, "another passphrase must not decrypt it"
        assert SECRET not in bad.stdout + bad.stderr


# --- needs the provider plugins (engine/engine.toml [[blocked]] says why they are not built) ---

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's unknown-value sentinel


def _normalize(value):
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if value == UNKNOWN or (isinstance(value, str) and re.fullmatch(r"output<[^>]*>", value)):
        return "[unknown]"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _name(urn_or_ref: str | None) -> str | None:
    """Resource name from a URN, or from a provider reference (URN::ID); default providers -> None."""
    if not urn_or_ref:
        return None
    parts = urn_or_ref.split("::")
    name = parts[3] if len(parts) > 4 else parts[-1]
    if parts[2] == "pulumi:pulumi:Stack" or name.startswith("default"):
        return None
    return name


BRIDGE_BOOKKEEPING = ("__defaults", "__internal")
"""Inputs pulumi-terraform-bridge adds in Check: the names of the inputs it filled with the Terraform
schema's defaults (`__defaults`) and its own metadata (`__internal`). The program never sends them."""

EXPANDED_BY_PROVIDER = ("kubernetes:yaml/v2:ConfigGroup", "kubernetes:helm.sh/v4:Chart")
"""Components the kubernetes provider registers itself (multi-language components): their children are
registered by the provider, and only once the kubeconfig is known, so a preview that creates the
cluster has none. The mock plan has the component and its inputs, not the children."""


def allowed_input(key: tuple[str, str], name: str, plan_value, engine_inputs: dict) -> str | None:
    """Why an input that differs between the engine's preview and the mock plan is expected, or None if it is not."""
    if name in BRIDGE_BOOKKEEPING:
        return "the bridge's bookkeeping"
    if plan_value == "<absent>" and name in (engine_inputs.get("__defaults") or []):
        return "the provider's schema default, filled in by its Check"
    if key[0].startswith("pulumi:providers:") and name == "version" and plan_value == "<absent>":
        return "the plugin version the engine loaded"
    return None


def engine_rows(preview: dict) -> dict[tuple[str, str], dict]:
    rows = {}
    types = {step.get("newState", {}).get("urn"): step.get("newState", {}).get("type") for step in preview.get("steps", [])}
    for step in preview.get("steps", []):
        state = step.get("newState") or {}
        if state.get("type") in (None, "pulumi:pulumi:Stack"):
            continue
        rows[(state["type"], _name(state["urn"]))] = {
            "parent": _name(state.get("parent")),
            "parent_type": types.get(state.get("parent")),
            "provider": _name(state.get("provider")),
            "inputs": _normalize(state.get("inputs") or {}),
        }
    return rows


def differences(engine: dict, plan: list[dict], overridden: dict[tuple[str, str, str], str] | None = None) -> list[str]:
    """Every difference that allowed_input() and EXPANDED_BY_PROVIDER do not explain. `overridden`: (type, name, input) -> why the test changed it."""
    overridden = overridden or {}
    want = {(r["type"], r["name"]): r for r in plan}
    out = [f"only in the engine's preview: {t} {n}" for t, n in sorted(set(engine) - set(want))
           if engine[(t, n)].get("parent_type") not in EXPANDED_BY_PROVIDER]
    out += [f"only in the mock plan: {t} {n}" for t, n in sorted(set(want) - set(engine))]
    for key in sorted(set(engine) & set(want)):
        got, exp = engine[key], want[key]
        for field in ("parent", "provider"):
            if got[field] != exp[field]:
                out.append(f"{key[0]} {key[1]}: {field} {got[field]!r} (engine) != {exp[field]!r} (plan)")
        for k in sorted(set(got["inputs"]) | set(exp["inputs"])):
            a, b = got["inputs"].get(k, "<absent>"), _normalize(exp["inputs"].get(k, "<absent>"))
            if a == b or (key[0], key[1], k) in overridden or allowed_input(key, k, b, got["inputs"]):
                continue
            out.append(f"{key[0]} {key[1]}: input {k}: {json.dumps(a)[:200]} (engine) != {json.dumps(b)[:200]} (plan)")
    return out


def test_the_comparison_allows_exactly_what_the_real_plugins_add():
    """What the real engine adds (its records of the run, never the program's inputs) is not a difference;
    anything else still is."""
    plan = [{"type": "libvirt:index/domain:Domain", "name": "vm-domain", "parent": "vm", "provider": "libvirt-h",
             "inputs": {"name": "vm", "memory": 1024}},
            {"type": "pulumi:providers:libvirt", "name": "libvirt-h", "parent": None, "provider": None, "inputs": {"uri": "qemu+ssh://root@h/system"}},
            {"type": "kubernetes:yaml/v2:ConfigGroup", "name": "objs", "parent": None, "provider": "kubernetes", "inputs": {"objs": []}}]
    engine = {
        ("libvirt:index/domain:Domain", "vm-domain"): {"parent": "vm", "parent_type": None, "provider": "libvirt-h", "inputs": {
            "name": "vm", "memory": 1024, "running": True, "__defaults": ["running"], "__internal": {"x": 1}}},
        ("pulumi:providers:libvirt", "libvirt-h"): {"parent": None, "parent_type": None, "provider": None,
                                                    "inputs": {"uri": "qemu:///system", "version": "0.5.4"}},
        ("kubernetes:yaml/v2:ConfigGroup", "objs"): {"parent": None, "parent_type": None, "provider": "kubernetes", "inputs": {"objs": []}},
        ("kubernetes:core/v1:ConfigMap", "cm"): {"parent": "objs", "parent_type": "kubernetes:yaml/v2:ConfigGroup", "provider": "kubernetes", "inputs": {}},
    }
    overridden = {("pulumi:providers:libvirt", "libvirt-h", "uri"): "the test points the provider at this machine's libvirtd"}
    assert differences(engine, plan, overridden) == []
    engine[("libvirt:index/domain:Domain", "vm-domain")]["inputs"]["vcpu"] = 4  # not named in __defaults: the program's
    engine[("libvirt:index/domain:Domain", "vm-domain")]["inputs"]["memory"] = 2048
    assert differences(engine, plan, overridden) == [
        "libvirt:index/domain:Domain vm-domain: input memory: 2048 (engine) != 1024 (plan)",
        "libvirt:index/domain:Domain vm-domain: input vcpu: 4 (engine) != \"<absent>\" (plan)",
    ]


@pytest.mark.parametrize("stack", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_preview_equals_the_mock_plan(providers, stack):
    out = preview(stack, providers, json=True)
    assert out.ok, out.error
    preview_doc = json.loads(out.stdout)
    # resources.json names each command's script file ([script: guest/...]): compare the inputs the program sent
    files = {str(p.relative_to(GOLDEN / stack)): p.read_text() for p in (GOLDEN / stack).rglob("*") if p.is_file()}
    plan = resolve_scripts(json.loads((GOLDEN / stack / "resources.json").read_text()), files)
    diffs = differences(engine_rows(preview_doc), plan)
    assert not diffs, f"{len(diffs)} differences between `pulumi preview` and the mock plan:\n" + "\n".join(diffs)


def test_bad_config_is_reported_in_the_form_the_readme_states(engine):
    """README: `pulumi preview` reports the lines of `make plan` under the header `invalid stack config (N problems):`,
    each as `  - <line>`, and the whole block twice (the program's error, then `an unhandled error occurred:`)."""
    out = preview("dev", engine, config_overrides={"gpu-stack:vmz": [{"name": "typo"}]})
    text = out.stdout + out.error + "".join(m for _, m in out.diagnostics)
    assert not out.ok and "Traceback" not in text
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "the whole block twice" in readme and "`invalid stack config (N problems):`" in readme
    assert "under `Diagnostics:`" in readme
    diagnostics = out.stdout.split("\nDiagnostics:\n", 1)[1].split("\nResources:", 1)[0]
    headers = re.findall(r"invalid stack config \((\d+) problems?\):", diagnostics)
    assert len(headers) == 2 and len(set(headers)) == 1, text
    assert "error: an unhandled error occurred: invalid stack config" in diagnostics
    problems = re.findall(r"^\s*- (gpu-stack:\S+: .*)$", diagnostics, re.M)
    assert len(problems) == 2 * int(headers[0]), text
    assert any(p.startswith("gpu-stack:vmz: unknown key") for p in problems)
