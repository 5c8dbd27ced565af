"""`make plan STACK=<name>`: what `pulumi up` would send, written to build/plan/<name>/.

Runs the real program under Pulumi's mock monitor in preview mode, with the
config from Pulumi.<name>.yaml. Needs no Pulumi CLI, network, credentials or
system validators: the domain stylesheet is applied with lxml (libxslt, the
library xsltproc uses). Secrets never reach the files: `secure:` values and
absent required secrets are placeholders, and every secret input is written
as "[secret]"; a secret stored in plain text is refused, as the program
refuses it. The same config gives byte-identical files. Bad input (of any
shape) exits 1 with one `gpu-stack:<key>: <problem>` line per problem.

Without host facts, IOMMU groups are assumed isolated. With `--facts`
(`make plan FACTS=a.json,b.json`, one file per host) or `--facts-dir`
(`<dir>/<host>.facts.json` for each host of the stack, as `make plans` does
with hosts/), the program gets the files in GPU_STACK_HOST_FACTS, exactly as
`pulumi preview` would, and checks IOMMU groups, BARs and NUMA against them.

After writing, the whole-plan convergence check (convergence/analysis.py) runs
on exactly what was written; each violation is one line on stderr naming the
object and the config key to change, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lxml import etree

from convergence import analysis as convergence
from render import dcgm_metrics
from render.guest_scripts import HEREDOC
from facts.host_facts import FactsError, load_host_facts
from hypervisors.libvirt.provider_xml import VolumeRef, provider_domain_xml
from render.rollout import change_issues, component_versions, reruns, rollout, version_changes
from hypervisors.vsphere.render import EXTRA_CONFIG_REASONS, SECRET_EXTRA_CONFIG
from hypervisors.kubevirt.render import KUBEVIRT_VERSION
from hypervisors.base import HYPERVISORS, vm_replacements
from hypervisors.base import plan_files as backend_plan_files
from stacks.checks import config_warnings
from config.support import pinned_versions
from config.models import SECRET_KEYS, StackConfig
from config.errors import PREFIX, ConfigError, ConfigIssue
from stacks.load import (FILE_KEY, StackFileConfig, decode_config_value, parse_stack_config, parse_stack_text,
                         plaintext_secret_issues, read_stack_file)
from tools import mockrun
from tools.cli import OneLineParser, UsageError, writable_dir

ROOT = Path(__file__).resolve().parent.parent
CLOUDINIT_POOL_PATH = "/var/lib/libvirt/images"  # the host's pool path; the provider reads it at create time


class _PlanDumper(yaml.SafeDumper):
    """Multi-line strings (config files inside values) as literal blocks, so reviewers can read them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlanDumper.add_representer(str, _str)


def to_yaml(value: Any) -> str:
    return yaml.dump(value, Dumper=_PlanDumper, sort_keys=True, default_flow_style=False, width=120)


def sanitize(value: Any) -> Any:
    """Secrets -> "[secret]", unknowns -> "[unknown]", everything else as JSON."""
    if isinstance(value, dict):
        if value.get(mockrun.SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return "[secret]"
        return {k: sanitize(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    if type(value).__name__ == "Unknown" or value == mockrun.UNKNOWN:
        return "[unknown]"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def load_stack_file(stack: str, root: Path = ROOT) -> StackFileConfig:
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        here = ", ".join(sorted(p.name[7:-5] for p in root.glob("Pulumi.*.yaml"))) or "none"
        raise ConfigError([ConfigIssue(FILE_KEY, f"no stack file {path.name}; stacks here: {here}")])
    return read_stack_file(path)


def _as_program_sees_it(values: dict[str, str], secret_keys: list[str]) -> tuple[dict[str, Any], set[str]]:
    """`gpu-stack:` keys decoded as stacks.load decodes them, and the secret ones."""
    ours = f"{PREFIX}:"
    raw = {k.removeprefix(ours): decode_config_value(v) for k, v in values.items() if k.startswith(ours)}
    return raw, {k.removeprefix(ours) for k in secret_keys if k.startswith(ours)}


def check_plan_config(values: dict[str, str], secret_keys: list[str], stack: str | None = None,
                      written: dict[str, str] | None = None) -> None:
    """The program's config validation on the plan's engine-form config, without running it; ConfigError if bad."""
    raw, present = _as_program_sees_it(values, secret_keys)
    parse_stack_config(raw, present, stack, written)


def plan_config(stack_config: dict[str, Any], stack: str | None = None) -> tuple[dict[str, str], list[str]]:
    """Engine-form config with placeholders for `secure:` values and for required secrets that are absent.

    A secret in plain text is refused here with the program's own words
    (stacks.load.plaintext_secret_issues), never replaced by a placeholder.
    """
    values, secret_keys, _ = plan_config_filled(stack_config, stack)
    return values, secret_keys


def plan_config_filled(stack_config: dict[str, Any], stack: str | None = None) -> tuple[dict[str, str], list[str], list[ConfigIssue]]:
    """plan_config, and the required secrets absent from the file that got a placeholder (the program's
    refusal of each: `pulumi up` says the same until the secret is set)."""
    values, secret_keys = mockrun.config_values(stack_config, lambda key: f"plan-placeholder-{key.split(':', 1)[1]}")
    raw, present = _as_program_sees_it(values, secret_keys)
    plain_text = plaintext_secret_issues(raw, lambda key: key in present)
    if plain_text:
        raise ConfigError(plain_text)
    filled = []
    try:
        parse_stack_config(raw, present, stack, getattr(stack_config, "written", None))
    except ConfigError as e:
        for issue in e.issues:
            if issue.path in SECRET_KEYS and issue.path not in present:
                full = f"{mockrun.PROJECT}:{issue.path}"
                if full not in secret_keys:
                    values[full] = f"plan-placeholder-{issue.path}"
                    secret_keys.append(full)
                    filled.append(issue)
    return values, secret_keys, filled


def placeholder_lines(filled: list[ConfigIssue]) -> list[str]:
    """One line per required secret planned with a placeholder: the key and the command that sets it."""
    lines = []
    for issue in sorted(filled, key=lambda i: i.path):
        key = f"{PREFIX}:{issue.path}"
        command = re.search(r"`(pulumi config set --secret [^`]*)`", issue.message)
        lines.append(f"  secret {key}: not set, planned with a placeholder; `pulumi up` refuses the stack until "
                     f"`{command.group(1) if command else f'pulumi config set --secret {key}'}`")
    return lines


def stack_config(values: dict[str, str], secret_keys: list[str]) -> StackConfig:
    """The typed config the plan was rendered from (values as plan_config returns them)."""
    raw, present = _as_program_sees_it(values, secret_keys)
    cfg, _ = parse_stack_config(raw, present)
    return cfg


def _domain_artifacts(result: mockrun.RunResult, domain: mockrun.Registered) -> dict[str, str]:
    siblings = result.children_of(domain.parent)
    inputs = dict(domain.inputs)
    volumes: dict[str, VolumeRef] = {}
    disks = []
    for i, vol in enumerate(r for r in siblings if r.type == "libvirt:index/volume:Volume"):
        key = f"volume-{i}"
        volumes[key] = VolumeRef(vol.inputs.get("pool", "default"), vol.inputs["name"], vol.inputs.get("format", "raw"))
        disks.append({"volumeId": key})
    inputs["disks"] = disks
    cloudinit = next((r for r in siblings if r.type == "libvirt:index/cloudInitDisk:CloudInitDisk"), None)
    paths = {}
    if cloudinit is not None:
        inputs["cloudinit"] = "cloudinit"
        paths["cloudinit"] = f"{CLOUDINIT_POOL_PATH}/{cloudinit.inputs['name']}"
    xslt = inputs["xml"]["xslt"]
    pre = provider_domain_xml(inputs, volumes, paths)
    transformed = etree.XSLT(etree.XML(xslt.encode()))(etree.XML(pre.encode()))
    files = {"domain.xslt": xslt, "domain.pre-xslt.xml": pre + "\n", "domain.xml": str(transformed)}
    if cloudinit is not None:
        files["cloud-init.meta-data"] = cloudinit.inputs.get("metaData", "")
    return files


VSPHERE_VM = "vsphere:index/virtualMachine:VirtualMachine"


def _unwrap_secret(value: Any) -> Any:
    if isinstance(value, dict) and value.get(mockrun.SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
        return value.get("value")
    return value


def vsphere_json(machine: mockrun.Registered) -> str:
    """The VirtualMachine's inputs for reviewers; extra_config key by key with its reason.

    extraConfig travels as one secret map (it holds the cloud-init user-data);
    here only the secret keys stay hidden.
    """
    inputs = dict(machine.inputs)
    extra = _unwrap_secret(inputs.pop("extraConfig", {})) or {}
    doc = sanitize(inputs)
    doc["extraConfig"] = {
        key: {"value": "[secret]" if key in SECRET_EXTRA_CONFIG else sanitize(value), "reason": EXTRA_CONFIG_REASONS.get(key, "")}
        for key, value in sorted(extra.items())
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _script_in(command_text: Any) -> str:
    """The phase script inside a remote command's SSH wrapper."""
    if not isinstance(command_text, str):
        return f"#!/usr/bin/env bash\n# {convergence.UNKNOWN_UNTIL_DEPLOY}: this phase's parameters come from other resources' outputs]\n"
    start = f"<<'{HEREDOC}'\n"
    if start not in command_text:
        return command_text if command_text.endswith("\n") else command_text + "\n"
    return command_text.split(start, 1)[1].rsplit(f"{HEREDOC}\n", 1)[0]


KUBEVIRT_VM = "kubernetes:kubevirt.io/v1:VirtualMachine"
KUBEVIRT_PATCH = "kubernetes:kubevirt.io/v1:KubeVirtPatch"


def _k8s_object(r: mockrun.Registered, api_version: str, kind: str) -> dict:
    doc = {k: v for k, v in sanitize(r.inputs).items() if k not in ("apiVersion", "kind")}
    return {"apiVersion": api_version, "kind": kind, **doc}


def kubevirt_artifacts(result: mockrun.RunResult) -> dict[str, str]:
    """The KubeVirt objects for reviewers: the VirtualMachine and what goes with it, the KubeVirt CR patch, the VMs' Namespace."""
    out: dict[str, str] = {}
    for machine in result.of_type(KUBEVIRT_VM):
        vm = sanitize(machine.inputs)
        name = vm["metadata"]["name"]
        out[f"vms/{name}/virtualmachine.yaml"] = to_yaml(vm)
        for sibling in result.children_of(machine.parent):
            if sibling.type == "kubernetes:core/v1:ConfigMap":
                out[f"vms/{name}/configmap-pcihole64.yaml"] = to_yaml(_k8s_object(sibling, "v1", "ConfigMap"))
            elif sibling.type == "kubernetes:core/v1:Service":
                out[f"vms/{name}/service-ssh.yaml"] = to_yaml(_k8s_object(sibling, "v1", "Service"))
            elif sibling.type == "kubernetes:core/v1:Secret":
                out[f"vms/{name}/secret-cloudinit.yaml"] = to_yaml(_k8s_object(sibling, "v1", "Secret"))
    for patch in result.of_type(KUBEVIRT_PATCH):
        out["kubevirt/kubevirt-cr-patch.yaml"] = to_yaml(sanitize(patch.inputs))
    host_clusters = {r.provider for r in (*result.of_type(KUBEVIRT_VM), *result.of_type(KUBEVIRT_PATCH))}
    for ns in result.of_type("kubernetes:core/v1:Namespace"):
        if ns.provider in host_clusters:  # the VMs' namespace (hosts[].kubevirt.createNamespace)
            doc = _k8s_object(ns, "v1", "Namespace")
            out[f"kubevirt/namespace-{doc['metadata']['name']}.yaml"] = to_yaml(doc)
    allocatable = result.outputs.get("kubevirtExpectedAllocatable")
    if isinstance(allocatable, dict) and allocatable:
        out["kubevirt/expected-allocatable.yaml"] = to_yaml(sanitize(allocatable))
    return out


def artifacts(result: mockrun.RunResult) -> dict[str, str]:
    """Relative path -> content for everything that reaches a machine."""
    out: dict[str, str] = kubevirt_artifacts(result)
    for domain in result.of_type("libvirt:index/domain:Domain"):
        for fname, text in _domain_artifacts(result, domain).items():
            out[f"vms/{domain.inputs['name']}/{fname}"] = text
    for machine in result.of_type(VSPHERE_VM):
        name = machine.inputs["name"]
        out[f"vms/{name}/vsphere.json"] = vsphere_json(machine)
        meta = (_unwrap_secret(machine.inputs.get("extraConfig")) or {}).get("guestinfo.metadata")
        if isinstance(meta, str):
            out[f"vms/{name}/cloud-init.meta-data"] = base64.b64decode(meta).decode()
    for backend in HYPERVISORS.values():  # a backend's own files (hypervisors/<kind>/plan_files.py), no switch on its kind here
        for path, doc in backend_plan_files(backend, result.resources).items():
            out[path] = doc if isinstance(doc, str) else json.dumps(sanitize(doc), indent=2, sort_keys=True) + "\n"
    for release in result.of_type("kubernetes:helm.sh/v3:Release"):
        values = sanitize(release.inputs.get("values", {}))
        out[f"helm/{release.inputs.get('name', release.name)}.values.yaml"] = to_yaml(values)
    for group in result.of_type("kubernetes:yaml/v2:ConfigGroup"):
        objs = sanitize(group.inputs.get("objs"))
        if not isinstance(objs, list):
            out[f"manifests/{group.name}/UNKNOWN.yaml"] = "# [unknown until deploy]\n"
            continue
        for obj in objs:
            meta = obj.get("metadata", {})
            fname = "-".join(p for p in (obj.get("kind", "").lower(), meta.get("namespace"), meta.get("name")) if p)
            out[f"manifests/{group.name}/{fname}.yaml"] = to_yaml(obj)
    for cmd in result.of_type("command:remote:Command"):
        for key, path in script_files(cmd).items():
            out[path] = _script_in(cmd.inputs[key])
    return out


def script_files(cmd: mockrun.Registered) -> dict[str, str]:
    """A remote command's inputs that carry a script -> the file of the plan that holds it. A one-line command
    (the hypervisor's `virsh autostart`) stays in resources.json, where it is read as it is."""
    out = {}
    if cmd.inputs.get("create") not in (None, "true"):
        out["create"] = f"guest/{cmd.name}.sh"
    if cmd.inputs.get("update"):
        out["update"] = f"guest/{cmd.name}.update.sh"
    if cmd.inputs.get("delete"):
        out["delete"] = f"guest/{cmd.name}.delete.sh"
    one_liner = lambda v, path: isinstance(v, str) and script_reference(v, path) == v  # noqa: E731
    return {key: path for key, path in out.items() if not one_liner(cmd.inputs[key], path)}


SCRIPT_REFERENCE = re.compile(r"\[script: (guest/[^\]\s]+\.sh)\]")
"""What resources.json has where a command's script was: the plan file that holds it (resolve_scripts puts it back)."""


def script_reference(command_text: Any, path: str) -> Any:
    """The command's input with its script replaced by `[script: <path>]`, so that a plan diff shows a changed script
    line by line in its own file, not as one JSON string. Exactly reversible by resolve_scripts; a value whose script
    cannot be cut out exactly (unknown until deploy, no trailing newline) stays as it is."""
    if not isinstance(command_text, str):
        return command_text
    start = f"<<'{HEREDOC}'\n"
    if start in command_text:
        before, rest = command_text.split(start, 1)
        if f"{HEREDOC}\n" not in rest:
            return command_text
        script, after = rest.rsplit(f"{HEREDOC}\n", 1)
        if not script.endswith("\n") or SCRIPT_REFERENCE.search(script):
            return command_text
        return f"{before}{start}[script: {path}]\n{HEREDOC}\n{after}"
    if command_text.endswith("\n") and not SCRIPT_REFERENCE.search(command_text):
        return f"[script: {path}]"
    return command_text


def resolve_scripts(rows: list[dict[str, Any]], files: dict[str, str]) -> list[dict[str, Any]]:
    """resources.json rows with every `[script: <path>]` replaced by that file's text: the inputs the program sent."""
    out = []
    for row in rows:
        if row.get("type") == "command:remote:Command":
            inputs = dict(row["inputs"])
            for key in ("create", "update", "delete"):
                value = inputs.get(key)
                if isinstance(value, str):
                    whole = SCRIPT_REFERENCE.fullmatch(value)
                    if whole:
                        inputs[key] = files[whole.group(1)]
                    else:
                        inputs[key] = SCRIPT_REFERENCE.sub(lambda m: files[m.group(1)].removesuffix("\n"), value, count=1)
            row = {**row, "inputs": inputs}
        out.append(row)
    return out


def _fingerprint(value: Any) -> Any:
    """Inputs for comparing two runs: a secret becomes a digest of its value (never written out), so a
    changed secret (a rotated token on stdin) still counts as a change."""
    if isinstance(value, dict):
        if value.get(mockrun.SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return "[secret " + hashlib.sha256(json.dumps(sanitize(value.get("value")), sort_keys=True).encode()).hexdigest() + "]"
        return {k: _fingerprint(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_fingerprint(v) for v in value]
    return sanitize(value)


def command_inputs(result: mockrun.RunResult) -> dict[str, dict[str, Any]]:
    """Remote commands' inputs, comparable between runs (render/rollout.reruns)."""
    return {c.name: _fingerprint(c.inputs) for c in result.of_type("command:remote:Command")}


def json_one_line_items(doc: Any, keys: tuple[str, ...], indent: int = 2) -> str:
    """json.dumps(doc, indent=2, sort_keys=True), except that each item of a list under one of `keys` is one line:
    a pull request's diff then shows a node's changed phases as a line each, not a key per line."""
    def render(value: Any, level: int, one_line_items: bool) -> str:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(value, dict) and value:
            rows = [f"{inner}{json.dumps(k)}: {render(v, level + 1, k in keys)}" for k, v in sorted(value.items())]
            return "{\n" + ",\n".join(rows) + f"\n{pad}}}"
        if isinstance(value, list) and value:
            items = [json.dumps(v, sort_keys=True) if one_line_items else render(v, level + 1, False) for v in value]
            return "[\n" + ",\n".join(f"{inner}{item}" for item in items) + f"\n{pad}]"
        return json.dumps(value, sort_keys=True)

    return render(doc, 0, False)


def rollout_json(stack: str, values: dict[str, str], secret_keys: list[str], result: mockrun.RunResult,
                 base: str | None = None, root: Path = ROOT, facts: list[str] | None = None) -> str:
    """rollout.json: the waves and each node's upgrade phases; with `base` (a git ref), what changing
    that ref's Pulumi.<stack>.yaml into this one re-runs, from both configs' update-mode runs.
    Raises ConfigError for a change the upgrade path refuses (render/rollout.change_issues)."""
    cfg = stack_config(values, secret_keys)
    triggers = {c.name: sanitize(c.inputs.get("triggers")) if isinstance(sanitize(c.inputs.get("triggers")), list) else []
                for c in result.of_type("command:remote:Command")}
    runs = changes = replaced = None
    new_at_base = False
    base_code = None
    if base is not None:
        text = _git_show(base, f"Pulumi.{stack}.yaml", root)
        old_values, old_secrets = plan_config(parse_stack_text(text, f"{base}:Pulumi.{stack}.yaml")) if text is not None else ({}, [])
        new_run = mockrun.run(values, secret_keys, stack=stack, preview=False, host_facts=facts)
        new = command_inputs(new_run)
        new_versions = component_versions(pinned_versions(cfg, KUBEVIRT_VERSION))
        if text is not None:
            old_cfg = stack_config(old_values, old_secrets)
            issues = change_issues(old_cfg, cfg)
            if issues:
                raise ConfigError(issues)
            old_run = mockrun.run(old_values, old_secrets, stack=stack, preview=False, host_facts=facts)
            runs = reruns(command_inputs(old_run), new)
            old_versions = component_versions(pinned_versions(old_cfg, KUBEVIRT_VERSION))
            replaced = vm_replacements(cfg, json.loads(resources_json(old_run)), json.loads(resources_json(new_run)))
            # a gpu-stack release between BASE and here (lib.sh, a stylesheet, a default pin) changes what runs without
            # any config change: plan BASE's config with BASE's own code and compare those plans as well
            base_plan, base_code = base_code_plan(base, stack, root, facts)
            if base_plan is not None:
                rows, files = base_plan["rows"], base_plan["files"]
                for name, how in reruns(plan_commands(rows, files), plan_commands(json.loads(resources_json(result)), artifacts(result))).items():
                    runs.setdefault(name, how)
                replaced = {**vm_replacements(cfg, rows, json.loads(resources_json(result))), **replaced}
                old_versions = {**old_versions, **component_versions(base_plan["versions"])}
            changes = {vm.name: version_changes(cfg, vm.name, old_versions, new_versions) for vm in cfg.vms}
        else:
            runs, new_at_base = reruns({}, new), True  # the stack is new at BASE: its first `pulumi up` creates everything
    doc = rollout(cfg, triggers, runs, changes, replaced)
    if base is not None:
        doc["base"] = base
        if base_code is not None:
            doc["baseCode"] = base_code
    if new_at_base:
        # not an upgrade: no node is drained or upgraded, every resource is created by the first `pulumi up`
        doc["newAtBase"] = True
        for wave in doc["waves"]:
            for entry in wave["nodes"]:
                entry["action"] = "create (new stack)"
        doc["summary"] = [f"new stack: Pulumi.{stack}.yaml does not exist at {base}; the first `pulumi up` creates "
                          f"every resource ({len(doc['waves'])} wave{'s' if len(doc['waves']) != 1 else ''} of nodes), nothing is upgraded"]
    return json_one_line_items(doc, ("phases",)) + "\n"


def plan_commands(rows: list[dict[str, Any]], files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A plan's remote commands and their inputs (scripts put back), comparable between two plans (render/rollout.reruns)."""
    return {r["name"]: r["inputs"] for r in resolve_scripts(rows, files) if r.get("type") == "command:remote:Command"}


def base_code_plan(ref: str, stack: str, root: Path, facts: list[str] | None) -> tuple[dict[str, Any] | None, str]:
    """The plan that `ref`'s own gpu-stack writes for `ref`'s Pulumi.<stack>.yaml ({"rows", "files", "versions"}),
    and a line for rollout.json's `baseCode` saying what was compared; None when `ref` holds no gpu-stack program
    or its plan cannot be made (then only the configs are compared, with this code)."""
    if _git_show(ref, "tools/plan.py", root) is None:
        return None, f"{ref} holds no gpu-stack program: only its config was compared, planned with this gpu-stack"
    with tempfile.TemporaryDirectory(prefix="gpu-stack-base-") as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "out"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=root, capture_output=True)
        unpacked = archive.returncode == 0 and subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, capture_output=True).returncode == 0
        if not unpacked:
            return None, f"{ref}'s tree could not be unpacked (git archive): only its config was compared"
        args = [sys.executable, "-m", "tools.plan", stack, "--out", str(out), "--stack-dir", str(tree)]
        args += [f"--facts={Path(f).resolve()}" for f in facts or []]
        proc = subprocess.run(args, cwd=tree, capture_output=True, text=True)
        plan = out / stack
        if not (plan / "resources.json").is_file():
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            return None, f"{ref}'s own plan failed ({last[0]}): only its config was compared, planned with this gpu-stack"
        files = {str(p.relative_to(plan)): p.read_text() for p in (plan / "guest").glob("*.sh")} if (plan / "guest").is_dir() else {}
        versions = json.loads((plan / "versions.json").read_text()) if (plan / "versions.json").is_file() else {}
        rows = json.loads((plan / "resources.json").read_text())
    return {"rows": rows, "files": files, "versions": versions}, f"{ref}'s config planned with {ref}'s gpu-stack and compared with this plan"


def _git_show(ref: str, path: str, root: Path) -> str | None:
    proc = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "exists on disk, but not in" in proc.stderr:
            return None
        raise SystemExit(f"BASE={ref}: {proc.stderr.strip()}")
    return proc.stdout


def _with_script_references(r: mockrun.Registered) -> Any:
    inputs = sanitize(r.inputs)
    if r.type == "command:remote:Command":
        for key, path in script_files(r).items():
            inputs[key] = script_reference(inputs[key], path)
    return inputs


def metric_names(version: str, metrics: dcgm_metrics.Metrics = dcgm_metrics.METRICS) -> dict[str, Any]:
    """What the alerts' and dashboard's metric names were checked against (render/dcgm_metrics.py), for the
    dcgm-exporter row of versions.json: that release, whether this stack runs it, and the renames rendered with an
    `or` fallback."""
    return {"checkedAgainst": dcgm_metrics.CHECKED_EXPORTER, "countersFile": dcgm_metrics.COUNTERS_PATH,
            "runsChecked": version.startswith(dcgm_metrics.CHECKED_EXPORTER + "-"),
            "renames": [{"old": r.old, "new": r.new, "release": r.release, "source": r.source}
                        for r in metrics.renames if r.old in metrics.used.values() or r.new in metrics.used.values()]}


def pinned_versions_doc(cfg: StackConfig) -> dict[str, Any]:
    doc = pinned_versions(cfg, KUBEVIRT_VERSION)
    for row in doc["components"]:
        if row["component"] == "dcgm-exporter":
            row["metricNames"] = metric_names(row["version"])
    return doc


def versions_json(cfg: StackConfig) -> str:
    """versions.json: every pinned component, its version, support status and end (config/support.py), relative to the
    catalog's read date so that the file does not change with the calendar; a pull request's plan diff shows each bump.
    The dcgm-exporter row says which release the metric names were checked against (metric_names)."""
    return json.dumps(pinned_versions_doc(cfg), indent=2, sort_keys=True) + "\n"


def metric_names_lines(doc: dict[str, Any]) -> list[str]:
    """The summary's word on the metric names, from versions.json's dcgm-exporter row (its `newest` and `metricNames`)."""
    lines = []
    for row in doc["components"]:
        names = row.get("metricNames")
        if names is None:
            continue
        line = (f"  dcgm metric names: alerts and dashboard use {names['countersFile']}, checked against dcgm-exporter "
                f"{names['checkedAgainst']}'s default counters")
        if not names["runsChecked"]:
            line += f"; this stack runs {row['version']}, whose counters are NOT checked: the alerts may be silent"
        newest = row.get("newest")
        if newest and newest["state"] != "pinned":
            line += f"; {newest['version']} ({newest['source']}) {newest['state']}"
        renames = names["renames"]
        line += ("; renames with `or` fallbacks: " + ", ".join(f"{r['old']} -> {r['new']} ({r['release']})" for r in renames)
                 if renames else "; no known renames of the fields used")
        lines.append(line)
    return lines


def resources_json(result: mockrun.RunResult) -> str:
    rows = []
    for r in result.resources:
        rows.append({
            "type": r.type,
            "name": r.name,
            "parent": r.parent,
            "provider": r.provider,
            "options": {
                "protect": r.protect,
                "retainOnDelete": r.retain_on_delete,
                "deleteBeforeReplace": r.delete_before_replace,
                "ignoreChanges": r.ignore_changes,
                "dependsOn": r.depends_on,
                "additionalSecretOutputs": r.additional_secret_outputs,
                "customTimeouts": r.custom_timeouts,
            },
            "inputs": _with_script_references(r),
        })
    return json.dumps(rows, indent=2, sort_keys=True) + "\n"


def addon_summary(result: mockrun.RunResult) -> list[str]:
    """Helm releases, the pod network, where Prometheus's data goes, and the readiness gates."""
    lines = []
    for release in result.of_type("kubernetes:helm.sh/v3:Release"):
        lines.append(f"  helm release {release.inputs.get('name')}: {release.inputs.get('chart')} {release.inputs.get('version')}"
                     f" in namespace {release.inputs.get('namespace')}")
    pod_network = result.outputs.get("podNetwork")
    if isinstance(pod_network, dict):
        lines.append(f"  pod network: {pod_network['chart']} {pod_network['version']} (Calico), pool {pod_network['podCidr']}")
    elif result.of_type("kubernetes:helm.sh/v3:Release"):
        lines.append("  pod network: none installed by this stack (mode join/existing, or addons.podNetwork.enabled false)")
    if isinstance(result.outputs.get("storage"), str):
        lines.append(f"  storage: {result.outputs['storage']}")
    gates = result.outputs.get("readinessGates")
    if isinstance(gates, list):
        lines.append("  readiness gates (readiness-gate, after the add-ons): " + "; ".join(gates))
    elif result.of_type("kubernetes:helm.sh/v3:Release"):
        lines.append("  readiness gates: none (no VM of this stack runs kubectl: mode existing, or no GPUs)")
    return lines


def summary(stack: str, result: mockrun.RunResult, facts: dict[str, str] | None = None) -> str:
    counts = Counter(r.type for r in result.resources)
    lines = [f"plan {stack}: {len(result.resources)} resources"]
    for type_, n in sorted(counts.items()):
        lines.append(f"  {n:3d}  {type_}")
    for vm in result.of_type("gpu-stack:index:GpuPassthroughVm"):
        kids = result.children_of(vm.name)
        kv = next((k for k in kids if k.type == KUBEVIRT_VM), None)
        if kv is not None:
            devices = kv.inputs["spec"]["template"]["spec"]["domain"]["devices"]
            hook = "hooks.kubevirt.io/hookSidecars" in (kv.inputs["spec"]["template"].get("metadata") or {}).get("annotations", {})
            lines.append(f"  vm {vm.name} (kubevirt): {len(kids)} resources, {len(devices.get('gpus', []))} gpus + {len(devices.get('hostDevices', []))} hostDevices, "
                         f"{int(kv.inputs['spec']['template']['spec']['domain']['cpu']['cores'])} vCPUs"
                         + (", pcihole64 by hook sidecar" if hook else ""))
            continue
        machine = next((k for k in kids if k.type == VSPHERE_VM), None)
        if machine is not None:
            extra = _unwrap_secret(machine.inputs.get("extraConfig")) or {}
            mmio = extra.get("pciPassthru.64bitMMIOSizeGB")
            lines.append(f"  vm {vm.name} (vsphere): {len(kids)} resources, {len(machine.inputs.get('pciDeviceIds', []))} PCI devices, "
                         f"{int(machine.inputs['numCpus'])} vCPUs, {int(machine.inputs['memory']) // 1024} GiB"
                         + (f", 64bitMMIOSizeGB {mmio}" if mmio else ""))
            continue
        domain = next((k for k in kids if k.type == "libvirt:index/domain:Domain"), None)
        if domain is None:  # a backend that writes its own plan files (hypervisors/base.py plan_files)
            lines.append(f"  vm {vm.name}: {len(kids)} resources ({', '.join(sorted({k.type.rsplit(':', 1)[-1] for k in kids}))})")
            continue
        xslt = domain.inputs["xml"]["xslt"]
        hole = re.search(r"pci-hole64-size=(\d+G)", xslt)
        lines.append(f"  vm {vm.name}: {len(kids)} resources, {xslt.count('<hostdev ')} hostdevs, "
                     f"{int(domain.inputs['vcpu'])} vCPUs, {int(domain.inputs['memory']) // 1024} GiB"
                     + (f", hole64 {hole.group(1)}" if hole else ""))
    lines += addon_summary(result)
    facts = facts or {}
    hosts = sorted(r.name.removeprefix("libvirt-") for r in result.of_type("pulumi:providers:libvirt"))
    pve_hosts = sorted(r.name.removeprefix("proxmox-") for r in result.of_type("pulumi:providers:proxmoxve"))  # hypervisors/proxmox/preflight.py proxmox_provider
    for host in hosts:
        if host in facts:
            lines.append(f"  host {host}: IOMMU groups, BARs, NUMA and address bits checked against {facts[host]}")
    for host in pve_hosts:
        if host in facts:
            lines.append(f"  host {host}: Proxmox VE release, IOMMU groups, BARs, NUMA and address bits checked against {facts[host]}")
    unchecked = [h for h in hosts if h not in facts]
    notes = []
    if unchecked:
        notes.append(f"IOMMU groups assumed isolated on {', '.join(unchecked)}, no host facts")
    if result.of_type("pulumi:providers:vsphere"):
        notes.append("vSphere inventory and PCI devices assumed as configured")
    if [h for h in pve_hosts if h not in facts]:
        notes.append("Proxmox VE release and PCI devices assumed as configured, each in its own IOMMU group")
    allocatable = result.outputs.get("kubevirtExpectedAllocatable")
    if isinstance(allocatable, dict):
        for node, resources in sorted(allocatable.items()):
            lines.append(f"  kubevirt node {node}: expected allocatable " + ", ".join(f"{r}={n}" for r, n in sorted(resources.items())) + " (one per IOMMU group, host facts)")
    if isinstance(result.outputs.get("kubevirtCapacity"), str):
        notes.append(f"KubeVirt capacity {result.outputs['kubevirtCapacity']}")
    lines.append(f"  (offline: {'; '.join(notes + ['secrets are placeholders'])})")
    return "\n".join(lines)


def stack_host_names(values: dict[str, str]) -> list[str]:
    """hosts[].name of the engine-form config, as far as it can be read (the program reports the rest)."""
    hosts = decode_config_value(values.get(f"{mockrun.PROJECT}:hosts", "[]"))
    if not isinstance(hosts, list):
        return []
    return [h["name"] for h in hosts if isinstance(h, dict) and isinstance(h.get("name"), str)]


def facts_files(facts: list[str], facts_dir: str | None, host_names: list[str]) -> list[str]:
    """`--facts` files (comma-separated, repeatable), plus <facts_dir>/<host>.facts.json for each host of the stack."""
    files = [f for item in facts for f in item.split(",") if f]
    if facts_dir is not None:
        directory = Path(facts_dir)
        if not directory.is_dir():
            raise SystemExit(f"--facts-dir {facts_dir}: no such directory")
        files += [str(directory / f"{h}.facts.json") for h in host_names if (directory / f"{h}.facts.json").is_file()]
    return files


def _facts_by_host(files: list[str]) -> dict[str, str]:
    out = {}
    for f in files:
        try:
            out[load_host_facts(f).host] = f
        except FactsError:  # the program has refused it already
            continue
    return out


@dataclass(frozen=True)
class PlanResult:
    out: Path
    summary: str
    violations: list[convergence.Violation]


def run_plan(stack: str, out_root: Path, root: Path = ROOT, facts: list[str] | None = None, facts_dir: str | None = None,
             base: str | None = None) -> PlanResult:
    """Write the plan (and rollout.json: the waves, or with `base` what changing that ref's config re-runs), then run the convergence check (convergence/analysis.py) on exactly what was written."""
    config = load_stack_file(stack, root)
    values, secret_keys, filled = plan_config_filled(config, stack)
    check_plan_config(values, secret_keys, stack, config.written)
    notes = placeholder_lines(filled) + [f"  warning: {w}" for w in config_warnings(stack_config(values, secret_keys))]  # the program checks the same again; this fails before any mock run
    facts_paths = facts_files(facts or [], facts_dir, stack_host_names(values))
    result = mockrun.run(values, secret_keys, stack=stack, preview=True, host_facts=facts_paths)
    rollout_text = rollout_json(stack, values, secret_keys, result, base, root, facts_paths)
    out = out_root / stack
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rows = resources_json(result)
    versions_text = versions_json(stack_config(values, secret_keys))
    files = {"rollout.json": rollout_text, "versions.json": versions_text, **artifacts(result),
             **burnin_files(stack_config(values, secret_keys))}
    for rel, text in sorted({"resources.json": rows, **files}.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    violations = convergence.check(convergence.Plan(tuple(json.loads(rows)), files), stack_config(values, secret_keys))
    n = len(convergence.RULES)
    verdict = f"ok ({n} rules)" if not violations else f"{len(violations)} violation{'s' if len(violations) != 1 else ''} ({n} rules)"
    text = "\n".join([summary(stack, result, _facts_by_host(facts_paths)), *burnin_summary(stack_config(values, secret_keys)),
                      rollout_summary(json.loads(rollout_text)),
                      f"  convergence: {verdict}", *metric_names_lines(json.loads(versions_text)), *notes])
    return PlanResult(out, text, violations)


def burnin_files(cfg: StackConfig) -> dict[str, str]:
    """burn-in.json (per node: its Jobs, the expected busbw and where it comes from) and the Jobs' manifests, which
    scripts/guest/burn-in.sh applies (at the first deploy and in each upgrade wave) and the convergence check reads."""
    from render.burnin import node_plans
    from render.burnin_gate import node_jobs, plan_summary
    from render.helm_values import uses_runtime_class
    from render.k8s_manifests import RUNTIME_CLASS
    from stacks.addons import gpu_resource
    out = {"burn-in.json": json.dumps(plan_summary(cfg), indent=2, sort_keys=True) + "\n"}
    runtime_class = RUNTIME_CLASS if uses_runtime_class(cfg.guest) else None
    for plan in node_plans(cfg).values():
        for obj in node_jobs(plan, cfg, runtime_class, gpu_resource(cfg)):
            meta = obj.get("metadata", {})
            fname = "-".join(p for p in (obj.get("kind", "").lower(), meta.get("namespace"), meta.get("name")) if p)
            out[f"manifests/burn-in/{fname}.yaml"] = to_yaml(obj)
    return out


def burnin_summary(cfg: StackConfig) -> list[str]:
    from render.burnin_gate import plan_summary
    doc = plan_summary(cfg)
    if not doc["enabled"]:
        return [f"  burn-in: off ({doc['reason']})"]
    lines = []
    for node, p in doc["nodes"].items():
        figure = f"no all-reduce ({p['source']})" if p["expectedBusbwGbps"] is None else \
            f"expected busbw {p['expectedBusbwGbps']:g} GB/s (from {p['origin']}), gate at {doc['minBusbwFraction']:g} x"
        lines.append(f"  burn-in {node}: Jobs {', '.join(p['jobs'])} (dcgmi diag -r {doc['dcgmLevel']}, {p['request']} GPUs); {figure}"
                     + ("; P2P required" if p["p2pRequired"] else ""))
    lines += [f"  burn-in {node}: skipped ({why})" for node, why in sorted(doc["skipped"].items())]
    return lines


def rollout_summary(doc: dict[str, Any]) -> str:
    if "summary" in doc:
        return f"  rollout from {doc['base']} (rollout.json):\n" + "\n".join(f"    {line}" for line in doc["summary"])
    return (f"  rollout waves (fleet.maxUnavailable {doc['maxUnavailable']}, control plane first): "
            + "; ".join(" ".join(e["node"] for e in w["nodes"]) for w in doc["waves"]))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m tools.plan", description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("--out", default=str(ROOT / "build" / "plan"))
    parser.add_argument("--stack-dir", default=str(ROOT), help="where Pulumi.<stack>.yaml lives")
    parser.add_argument("--facts", action="append", default=[], metavar="FILE[,FILE...]",
                        help="host facts from scripts/host-facts.sh, one file per host (matched by the host name inside)")
    parser.add_argument("--facts-dir", help="use <dir>/<host>.facts.json for each host of the stack that has one")
    parser.add_argument("--base", help="git ref: rollout.json lists what changing that ref's Pulumi.<stack>.yaml into this one re-runs")
    args = parser.parse_args(argv)
    try:
        out_root = writable_dir(args.out, "--out")
        result = run_plan(args.stack, out_root, Path(args.stack_dir), args.facts, args.facts_dir, args.base)
    except UsageError as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{parser.prog}: --out {args.out}: cannot write {e.filename} ({e.strerror})", file=sys.stderr)
        return 2
    except ConfigError as e:
        for issue in e.issues:
            print(" ".join(str(issue).split()), file=sys.stderr)
        return 1
    out = result.out
    print(result.summary)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    for v in result.violations:
        print(f"convergence: {v}", file=sys.stderr)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
