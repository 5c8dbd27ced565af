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
from tests.engine.conftest import PROVIDERS, require_plugins
from tests.support.host_facts import engine_stack_config, mock_plan, stack_host_facts
from tests.support.engine import operate
from tools.engine import TEST_PASSPHRASE, Outcome, isolated, manifest, workspace
from tools.plan import stack_config

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


LOCAL_LIBVIRT = "qemu:///system"
"""This machine's libvirtd. The libvirt provider connects to every hosts[].libvirtUri when it is
configured (terraform-provider-libvirt v0.8.1), so the libvirt stacks' own hypervisors would have to
answer; the tests point every libvirt host here instead (tools/engine.with_libvirt_uri)."""


def local_preview(stack: str, engine: Path, facts_dir: Path, **kwargs) -> Outcome:
    """A real preview of `stack` with its libvirt hosts at LOCAL_LIBVIRT and host facts synthesised from
    its config (tests/support/host_facts.py): this libvirtd has none of the stacks' GPUs, so without
    facts the IOMMU preflight's getNodeDeviceInfo would refuse every address ("is not a PCI device of host")."""
    facts = stack_host_facts(stack, facts_dir, LOCAL_LIBVIRT)
    return preview(stack, engine, libvirt_uri=LOCAL_LIBVIRT, host_facts=[str(p) for p in facts], **kwargs)


def stack_plugins(stack: str) -> tuple[str, ...]:
    """The provider packages a preview of `stack` loads: PROVIDERS, and vsphere for a stack with a vSphere host."""
    cfg = stack_config(*engine_stack_config(stack))
    return PROVIDERS + (("vsphere",) if any(h.kind == "vsphere" for h in cfg.hosts) else ())


def test_bad_config_fails_naming_the_key_without_a_traceback_and_registers_nothing(engine):
    """The promise the mock harness makes (ConfigError before any resource), kept by the real engine."""
    out = preview("dev", engine, config_overrides={"gpu-stack:vmz": [{"name": "typo"}]})
    text = out.stdout + out.error
    assert not out.ok
    assert "gpu-stack:vmz" in text, text
    assert "Traceback" not in text + "".join(m for _, m in out.diagnostics), text
    assert set(out.registered) <= {"pulumi:pulumi:Stack"}, out.registered
    assert any("gpu-stack:vmz" in m for s, m in out.diagnostics if s == "error"), out.diagnostics


ENGINE_GONE = re.compile(r"exception when preparing or executing rpc for [^\n]*: Traceback \(most recent call last\):\n"
                         r"[\s\S]*?(?:pulumi\.errors\.RunError: Resource monitor has terminated, shutting down|"
                         r"Exception: context canceled)\n")


@pytest.mark.parametrize("stack", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_stack_config_loads_under_the_real_engine(engine, stack, tmp_path):
    """The engine hands the program Pulumi.<stack>.yaml itself (structured values serialized by
    the CLI, not by tools/mockrun.py): the program must get past config and start registering
    resources. It may stop only at a provider plugin that engine/engine.toml records as blocked
    and that is not built. Libvirt hosts: this machine's libvirtd, with facts (local_preview)."""
    blocked = {e["name"]: e["wants"] for e in manifest().get("blocked", [])
               if not (engine / e["name"]).is_file()}
    out = local_preview(stack, engine, tmp_path / "facts")
    text = out.stdout + out.error + "".join(m for _, m in out.diagnostics)
    # When the engine stops at a missing plugin while the program is still registering, the SDK logs each pending
    # registration's RPC failure with its traceback, ending in "Resource monitor has terminated" (gRPC UNAVAILABLE)
    # or "context canceled" (CANCELLED) (pulumi 3.272.0 runtime/resource.py do_register, runtime/settings.py
    # grpc_error_to_exception). That is the engine's stop, which the
    # loop below requires to be a recorded blocked plugin; any other traceback is the program's and fails.
    ours = ENGINE_GONE.sub("", text)
    assert "Traceback" not in ours and "invalid stack config" not in text, text
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
schema's defaults (`__defaults`, on the resource and in every nested object) and its own metadata
(`__internal`, `{}` on the libvirt and kubernetes providers in a real preview). The program never sends them."""

EXPANDED_BY_PROVIDER = ("kubernetes:yaml/v2:ConfigGroup", "kubernetes:helm.sh/v4:Chart")
"""Components the kubernetes provider constructs itself (multi-language components, `remote=True`): the
engine hands the program's inputs to the provider's Construct, and its preview step records the
component with the parent only: no inputs and no provider (a real preview of kubevirt with
pulumi-resource-kubernetes 4.32.0: `{"urn", "custom": false, "type", "parent"}`). Their children are
registered by the provider, and only once the kubeconfig is known, so they appear only in the engine
(never in the mock plan), and only under such a component. The mock plan records the inputs the
program sent. So, for these types only: the engine's missing inputs and provider are not a difference,
but any input or provider it does record must still equal the plan's, and the parent must match."""


def _expanded(type_: str) -> str | None:
    """Why a field of an EXPANDED_BY_PROVIDER component that the engine did not record is not a difference."""
    if type_ in EXPANDED_BY_PROVIDER:
        return "the kubernetes provider constructs this component; the engine records neither its inputs nor its provider"
    return None


def provider_wants() -> dict[str, str]:
    """Provider package -> the plugin version gpu-stack's Python packages ask for (engine/engine.toml `wants`)."""
    m = manifest()
    return {e["name"].removeprefix("pulumi-resource-"): e["wants"] for e in m.get("binary", []) + m.get("blocked", [])
            if e["name"].startswith("pulumi-resource-")}


def allowed_input(key: tuple[str, str], name: str, plan_value, engine_inputs: dict) -> str | None:
    """Why a top-level input that differs between the engine's preview and the mock plan is expected, or None if it is not."""
    if name in BRIDGE_BOOKKEEPING and plan_value == "<absent>":
        return "the bridge's bookkeeping"
    if plan_value == "<absent>" and name in (engine_inputs.get("__defaults") or []):
        return "the provider's schema default, filled in by its Check"
    if (key[0].startswith("pulumi:providers:") and name == "version" and plan_value == "<absent>"
            and engine_inputs.get("version") == provider_wants().get(key[0].removeprefix("pulumi:providers:"))):
        # the SDK's own version (its pulumi-plugin.json), not the plugin the engine loaded: a real preview with
        # pulumi-resource-kubernetes 4.32.0 records "version": "4.34.2", what pulumi_kubernetes asks for
        return "the plugin version the provider's SDK asks for, which the engine records as the provider's input"
    return None


def nested_differences(path: str, got, want) -> list[tuple[str, object, object]]:
    """(path, engine value, plan value) for each difference inside one input. In every nested object the
    bridge adds `__defaults` (the fields of that block it filled with the Terraform schema's defaults;
    a real preview: consoles[0] {"__defaults": ["sourceHost", "sourceService"], "sourceHost": "127.0.0.1",
    ...}, graphics autoport/listenAddress, disks[0].scsi); a field named there and absent from the plan is
    the provider's default, not the program's. Everything else must be equal, lists element by element."""
    if isinstance(got, dict) and isinstance(want, dict):
        out = []
        defaults = got.get("__defaults") or []
        for k in sorted(set(got) | set(want)):
            if k not in want and (k in BRIDGE_BOOKKEEPING or k in defaults):
                continue
            out += nested_differences(f"{path}.{k}", got.get(k, "<absent>"), want.get(k, "<absent>"))
        return out
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (x, y) in enumerate(zip(got, want)) for d in nested_differences(f"{path}[{i}]", x, y)]
    return [] if got == want else [(path, got, want)]


def engine_rows(preview: dict) -> dict[tuple[str, str], dict]:
    rows = {}
    states = {(step.get("newState") or {}).get("urn"): step.get("newState") or {} for step in preview.get("steps", [])}

    def ancestor_types(urn: str | None) -> list[str]:
        out, seen = [], set()
        while urn in states and urn not in seen:
            seen.add(urn)
            out.append(states[urn].get("type"))
            urn = states[urn].get("parent")
        return out

    for step in preview.get("steps", []):
        state = step.get("newState") or {}
        if state.get("type") in (None, "pulumi:pulumi:Stack"):
            continue
        rows[(state["type"], _name(state["urn"]))] = {
            "parent": _name(state.get("parent")),
            "parent_type": states.get(state.get("parent"), {}).get("type"),
            "ancestor_types": ancestor_types(state.get("parent")),
            "provider": _name(state.get("provider")),
            "provider_recorded": "provider" in state,
            "inputs": _normalize(state.get("inputs") or {}),
            "inputs_recorded": "inputs" in state,
        }
    return rows


def differences(engine: dict, plan: list[dict], overridden: dict[tuple[str, str, str], str] | None = None) -> list[str]:
    """Every difference that allowed_input() and EXPANDED_BY_PROVIDER do not explain. `overridden`: (type, name, input) -> why the test changed it."""
    overridden = overridden or {}
    want = {(r["type"], r["name"]): r for r in plan}
    out = [f"only in the engine's preview: {t} {n}" for t, n in sorted(set(engine) - set(want))
           if not set(engine[(t, n)].get("ancestor_types", ())) & set(EXPANDED_BY_PROVIDER)]
    out += [f"only in the mock plan: {t} {n}" for t, n in sorted(set(want) - set(engine))]
    for key in sorted(set(engine) & set(want)):
        got, exp = engine[key], want[key]
        for field in ("parent", "provider"):
            if field == "provider" and not got.get("provider_recorded", True) and _expanded(key[0]):
                continue
            if got[field] != exp[field]:
                out.append(f"{key[0]} {key[1]}: {field} {got[field]!r} (engine) != {exp[field]!r} (plan)")
        if not got.get("inputs_recorded", True) and _expanded(key[0]):
            continue
        for k in sorted(set(got["inputs"]) | set(exp["inputs"])):
            a, b = got["inputs"].get(k, "<absent>"), _normalize(exp["inputs"].get(k, "<absent>"))
            if a == b or (key[0], key[1], k) in overridden or allowed_input(key, k, b, got["inputs"]):
                continue
            for path, x, y in nested_differences(k, a, b):
                out.append(f"{key[0]} {key[1]}: input {path}: {json.dumps(x)[:200]} (engine) != {json.dumps(y)[:200]} (plan)")
    return out


def _step(type_: str, name: str, parent: str | None = None, provider: str | None = None, inputs: dict | None = None,
          custom: bool = True) -> dict:
    """A `pulumi preview --json` create step, shaped as the real engine writes it (3.274.1)."""
    urn = f"urn:pulumi:dev::gpu-stack::{type_}::{name}"
    state = {"urn": urn, "custom": custom, "type": type_}
    if parent:
        state["parent"] = f"urn:pulumi:dev::gpu-stack::{parent}"
    if provider:
        state["provider"] = f"urn:pulumi:dev::gpu-stack::{provider}::{UNKNOWN}"
    if inputs is not None:
        state["inputs"] = inputs
    return {"op": "create", "urn": urn, "newState": state}


def _real_preview() -> tuple[dict, list[dict]]:
    """What the real plugins recorded (libvirt 0.5.4, kubernetes 4.32.0, issue 22 item 11), and the mock plan's rows."""
    steps = [
        _step("pulumi:providers:libvirt", "libvirt-h", inputs={"__internal": {}, "uri": "qemu:///system", "version": "0.5.4"}),
        _step("pulumi:providers:kubernetes", "kubernetes", inputs={"__internal": {}, "kubeconfig": "k", "version": "4.34.2"}),
        _step("libvirt:index/domain:Domain", "vm-domain", parent="gpu-stack:index:Vm::vm", provider="pulumi:providers:libvirt::libvirt-h", inputs={
            "__defaults": ["fwCfgName"], "fwCfgName": "opt/com.coreos/config", "name": "vm", "memory": 1024,
            "consoles": [{"__defaults": ["sourceHost", "sourceService"], "sourceHost": "127.0.0.1", "sourceService": "0", "type": "pty"}],
            "cpu": {"__defaults": [], "mode": "host-passthrough"}}),
        _step("gpu-stack:index:Vm", "vm", custom=False, inputs={}),
        # constructed by the kubernetes provider: parent only, no inputs, no provider
        _step("kubernetes:yaml/v2:ConfigGroup", "objs", parent="gpu-stack:index:Addon::addon", custom=False),
        _step("kubernetes:helm.sh/v4:Chart", "chart", parent="gpu-stack:index:Addon::addon", custom=False),
        _step("gpu-stack:index:Addon", "addon", custom=False, inputs={}),
        # children of a constructed component, once the kubeconfig is known
        _step("kubernetes:core/v1:ConfigMap", "cm", parent="kubernetes:yaml/v2:ConfigGroup::objs", provider="pulumi:providers:kubernetes::kubernetes", inputs={}),
    ]
    plan = [
        {"type": "pulumi:providers:libvirt", "name": "libvirt-h", "parent": None, "provider": None, "inputs": {"uri": "qemu+ssh://root@h/system"}},
        {"type": "pulumi:providers:kubernetes", "name": "kubernetes", "parent": None, "provider": None, "inputs": {"kubeconfig": "k"}},
        {"type": "libvirt:index/domain:Domain", "name": "vm-domain", "parent": "vm", "provider": "libvirt-h",
         "inputs": {"name": "vm", "memory": 1024, "consoles": [{"type": "pty"}], "cpu": {"mode": "host-passthrough"}}},
        {"type": "gpu-stack:index:Vm", "name": "vm", "parent": None, "provider": None, "inputs": {}},
        {"type": "kubernetes:yaml/v2:ConfigGroup", "name": "objs", "parent": "addon", "provider": "kubernetes", "inputs": {"objs": [{"kind": "ConfigMap"}]}},
        {"type": "kubernetes:helm.sh/v4:Chart", "name": "chart", "parent": "addon", "provider": "kubernetes", "inputs": {"chart": "c", "version": "1"}},
        {"type": "gpu-stack:index:Addon", "name": "addon", "parent": None, "provider": None, "inputs": {}},
    ]
    return {"steps": steps}, plan


def _with(doc: dict, name: str, change) -> dict:
    doc = json.loads(json.dumps(doc))
    change(next(s["newState"] for s in doc["steps"] if s["urn"].endswith(f"::{name}")))
    return doc


def test_the_comparison_allows_exactly_what_the_real_plugins_add():
    """What the real engine adds (its records of the run, never the program's inputs) is not a difference;
    anything else still is."""
    doc, plan = _real_preview()
    overridden = {("pulumi:providers:libvirt", "libvirt-h", "uri"): "the test points the provider at this machine's libvirtd"}
    assert differences(engine_rows(doc), plan, overridden) == []
    assert differences(engine_rows(doc), plan) == [
        'pulumi:providers:libvirt libvirt-h: input uri: "qemu:///system" (engine) != "qemu+ssh://root@h/system" (plan)']

    def program_inputs(state):
        state["inputs"]["vcpu"] = 4  # not named in __defaults: the program's
        state["inputs"]["memory"] = 2048
        state["inputs"]["consoles"][0]["targetPort"] = "1"  # nested, not named in that block's __defaults
        state["inputs"]["cpu"]["__defaults"] = []
        state["inputs"]["cpu"]["mode"] = "host-model"
    assert differences(engine_rows(_with(doc, "vm-domain", program_inputs)), plan, overridden) == [
        'libvirt:index/domain:Domain vm-domain: input consoles[0].targetPort: "1" (engine) != "<absent>" (plan)',
        'libvirt:index/domain:Domain vm-domain: input cpu.mode: "host-model" (engine) != "host-passthrough" (plan)',
        "libvirt:index/domain:Domain vm-domain: input memory: 2048 (engine) != 1024 (plan)",
        'libvirt:index/domain:Domain vm-domain: input vcpu: 4 (engine) != "<absent>" (plan)',
    ]
    # a provider version other than the one its SDK asks for
    assert differences(engine_rows(_with(doc, "kubernetes", lambda st: st["inputs"].update(version="4.32.0"))), plan, overridden) == [
        'pulumi:providers:kubernetes kubernetes: input version: "4.32.0" (engine) != "<absent>" (plan)']
    # a constructed component: what the engine does record must still agree, and so must its parent
    assert differences(engine_rows(_with(doc, "objs", lambda st: st.update(inputs={"objs": []}))), plan, overridden) == [
        'kubernetes:yaml/v2:ConfigGroup objs: input objs: [] (engine) != [{"kind": "ConfigMap"}] (plan)']
    assert differences(engine_rows(_with(doc, "chart", lambda st: st.update(provider="urn:pulumi:dev::gpu-stack::pulumi:providers:kubernetes::other::x"))), plan, overridden) == [
        "kubernetes:helm.sh/v4:Chart chart: provider 'other' (engine) != 'kubernetes' (plan)"]
    assert differences(engine_rows(_with(doc, "chart", lambda st: st.update(parent="urn:pulumi:dev::gpu-stack::gpu-stack:index:Vm::vm"))), plan, overridden) == [
        "kubernetes:helm.sh/v4:Chart chart: parent 'vm' (engine) != 'addon' (plan)"]
    # a component of another type with no inputs recorded is a difference; so is a child outside a constructed component
    assert differences(engine_rows(_with(doc, "vm-domain", lambda st: st.pop("inputs"))), plan, overridden) == [
        f'libvirt:index/domain:Domain vm-domain: input {k}: "<absent>" (engine) != {json.dumps(v)} (plan)'
        for k, v in sorted(plan[2]["inputs"].items())]
    assert differences(engine_rows(_with(doc, "cm", lambda st: st.update(parent="urn:pulumi:dev::gpu-stack::gpu-stack:index:Addon::addon"))), plan, overridden) == [
        "only in the engine's preview: kubernetes:core/v1:ConfigMap cm"]


@pytest.mark.parametrize("stack", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_preview_equals_the_mock_plan(engine, stack, tmp_path):
    """The real preview registers what the mock run of the same config records, with the same inputs, but
    for what differences() explains."""
    require_plugins(engine, stack_plugins(stack))
    out = local_preview(stack, engine, tmp_path / "facts", json=True)
    assert out.ok, out.error
    preview_doc = json.loads(out.stdout)
    # the mock run of the same throwaway config and facts, its scripts resolved (resources.json names each command's
    # script file); tests/test_synthetic_host_facts.py shows it is the golden plan but for what LOCAL_LIBVIRT
    # changes (the providers' uri, a local autostart command)
    plan = mock_plan(stack, libvirt_uri=LOCAL_LIBVIRT, host_facts=stack_host_facts(stack, tmp_path / "plan-facts", LOCAL_LIBVIRT))
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


def test_only_the_sdks_shutdown_tracebacks_are_set_aside():
    """ENGINE_GONE removes the SDK's log of a registration cut off by the engine's stop, nothing else."""
    gone = ("exception when preparing or executing rpc for ty='x' name='y': Traceback (most recent call last):\n"
            "  File \"resource.py\", line 1340, in do_rpc_call\ngrpc._channel._InactiveRpcError: <...>\n\n"
            "During handling of the above exception, another exception occurred:\n\n"
            "Traceback (most recent call last):\n  File \"settings.py\", line 352\n"
            "pulumi.errors.RunError: Resource monitor has terminated, shutting down\n")
    ours = "Traceback (most recent call last):\n  File \"__main__.py\", line 3\nKeyError: 'vms'\n"
    assert "Traceback" not in ENGINE_GONE.sub("", gone)
    assert "Traceback" in ENGINE_GONE.sub("", ours + gone)
    assert "Traceback" in ENGINE_GONE.sub("", gone + ours)
    canceled = gone.replace("pulumi.errors.RunError: Resource monitor has terminated, shutting down", "Exception: context canceled")
    assert "Traceback" not in ENGINE_GONE.sub("", canceled + gone)
    other = gone.replace("pulumi.errors.RunError: Resource monitor has terminated, shutting down", "Exception: invalid inputs")
    assert "Traceback" in ENGINE_GONE.sub("", other)
