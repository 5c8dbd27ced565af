"""`make plan STACK=<name>`: what `pulumi up` would send, written to build/plan/<name>/.

Runs the real program under Pulumi's mock monitor in preview mode, with the
config from Pulumi.<name>.yaml. Needs no Pulumi CLI, network, credentials or
system validators: the domain stylesheet is applied with lxml (libxslt, the
library xsltproc uses). Secrets never reach the files: `secure:` values and
absent required secrets are placeholders, and every secret input is written
as "[secret]"; a secret stored in plain text is refused, as the program
refuses it. The same config gives byte-identical files. Bad input (of any
shape) exits 1 with one `gpu-stack:<key>: <problem>` line per problem.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from lxml import etree

from render.guest_scripts import HEREDOC
from render.provider_xml import VolumeRef, provider_domain_xml
from stacks.config import SECRET_KEYS
from stacks.errors import PREFIX, ConfigError, ConfigIssue
from stacks.load import FILE_KEY, decode_config_value, parse_stack_config, plaintext_secret_issues, read_stack_file
from tools import mockrun

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


def load_stack_file(stack: str, root: Path = ROOT) -> dict[str, Any]:
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


def check_plan_config(values: dict[str, str], secret_keys: list[str], stack: str | None = None) -> None:
    """The program's config validation on the plan's engine-form config, without running it; ConfigError if bad."""
    raw, present = _as_program_sees_it(values, secret_keys)
    parse_stack_config(raw, present, stack)


def plan_config(stack_config: dict[str, Any], stack: str | None = None) -> tuple[dict[str, str], list[str]]:
    """Engine-form config with placeholders for `secure:` values and for required secrets that are absent.

    A secret in plain text is refused here with the program's own words
    (stacks.load.plaintext_secret_issues), never replaced by a placeholder.
    """
    values, secret_keys = mockrun.config_values(stack_config, lambda key: f"plan-placeholder-{key.split(':', 1)[1]}")
    raw, present = _as_program_sees_it(values, secret_keys)
    plain_text = plaintext_secret_issues(raw, lambda key: key in present)
    if plain_text:
        raise ConfigError(plain_text)
    try:
        parse_stack_config(raw, present, stack)
    except ConfigError as e:
        for issue in e.issues:
            if issue.path in SECRET_KEYS and issue.path not in present:
                full = f"{mockrun.PROJECT}:{issue.path}"
                values[full] = f"plan-placeholder-{issue.path}"
                secret_keys.append(full)
    return values, secret_keys


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


def _script_in(command_text: Any) -> str:
    """The phase script inside a remote command's SSH wrapper."""
    if not isinstance(command_text, str):
        return "#!/usr/bin/env bash\n# [unknown until deploy: this phase's parameters come from other resources' outputs]\n"
    start = f"<<'{HEREDOC}'\n"
    if start not in command_text:
        return command_text if command_text.endswith("\n") else command_text + "\n"
    return command_text.split(start, 1)[1].rsplit(f"{HEREDOC}\n", 1)[0]


def artifacts(result: mockrun.RunResult) -> dict[str, str]:
    """Relative path -> content for everything that reaches a machine."""
    out: dict[str, str] = {}
    for domain in result.of_type("libvirt:index/domain:Domain"):
        for fname, text in _domain_artifacts(result, domain).items():
            out[f"vms/{domain.inputs['name']}/{fname}"] = text
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
        if cmd.inputs.get("create") not in (None, "true"):
            out[f"guest/{cmd.name}.sh"] = _script_in(cmd.inputs["create"])
        if cmd.inputs.get("delete"):
            out[f"guest/{cmd.name}.delete.sh"] = _script_in(cmd.inputs["delete"])
    return out


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
            "inputs": sanitize(r.inputs),
        })
    return json.dumps(rows, indent=2, sort_keys=True) + "\n"


def summary(stack: str, result: mockrun.RunResult) -> str:
    counts = Counter(r.type for r in result.resources)
    lines = [f"plan {stack}: {len(result.resources)} resources"]
    for type_, n in sorted(counts.items()):
        lines.append(f"  {n:3d}  {type_}")
    for vm in result.of_type("gpu-stack:index:GpuPassthroughVm"):
        kids = result.children_of(vm.name)
        domain = next(k for k in kids if k.type == "libvirt:index/domain:Domain")
        xslt = domain.inputs["xml"]["xslt"]
        hole = re.search(r"pci-hole64-size=(\d+G)", xslt)
        lines.append(f"  vm {vm.name}: {len(kids)} resources, {xslt.count('<hostdev ')} hostdevs, "
                     f"{int(domain.inputs['vcpu'])} vCPUs, {int(domain.inputs['memory']) // 1024} GiB"
                     + (f", hole64 {hole.group(1)}" if hole else ""))
    lines.append("  (offline: IOMMU groups assumed isolated; secrets are placeholders)")
    return "\n".join(lines)


def write_plan(stack: str, out_root: Path, root: Path = ROOT) -> tuple[Path, str]:
    values, secret_keys = plan_config(load_stack_file(stack, root), stack)
    check_plan_config(values, secret_keys, stack)  # the program checks the same again; this fails before any mock run
    result = mockrun.run(values, secret_keys, stack=stack, preview=True)
    out = out_root / stack
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files = {"resources.json": resources_json(result), **artifacts(result)}
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return out, summary(stack, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("--out", default=str(ROOT / "build" / "plan"))
    parser.add_argument("--stack-dir", default=str(ROOT), help="where Pulumi.<stack>.yaml lives")
    args = parser.parse_args(argv)
    try:
        out, text = write_plan(args.stack, Path(args.out), Path(args.stack_dir))
    except ConfigError as e:
        for issue in e.issues:
            print(" ".join(str(issue).split()), file=sys.stderr)
        return 1
    print(text)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
