"""One engine operation for tests/engine/ (run through tools.engine.isolated, in a process of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tools.engine import Outcome, workspace


def operate(stack: str, bin_dir: str, op: str = "preview", *, secrets: dict[str, str] | None = None,
            config_overrides: dict[str, Any] | None = None, libvirt_uri: str | None = None,
            host_facts: list[str] | None = None, **op_args: Any) -> Outcome:
    """One automation-API operation (`preview`, `up`, ...) on a fresh throwaway stack."""
    from pulumi import automation as auto

    events: list[Any] = []
    with workspace(stack, Path(bin_dir), secrets=secrets, config_overrides=config_overrides, libvirt_uri=libvirt_uri,
                   host_facts=host_facts) as ws:
        try:
            result = getattr(ws.stack, op)(color="never", on_event=events.append, **op_args)
            ok, stdout, error = True, result.stdout, ""
        except auto.errors.CommandError as e:
            text = str(e)
            ok, stdout, error = False, text.split(" stdout: ", 1)[-1].rsplit(" stderr: ", 1)[0], text.rsplit(" stderr: ", 1)[-1]
    return Outcome(
        ok, stdout, error,
        [e.resource_pre_event.metadata.type for e in events if e.resource_pre_event],
        [(e.diagnostic_event.severity, e.diagnostic_event.message) for e in events if e.diagnostic_event],
    )


def _cluster_objects(kubectl: str, kubeconfig: str, objects: list[tuple[str, str, str]]) -> dict[str, Any]:
    """What the control plane holds of each (kind, namespace, name): its object, or None when absent."""
    import json
    import subprocess

    found: dict[str, Any] = {}
    for kind, namespace, name in objects:
        args = [kubectl, "--kubeconfig", kubeconfig, "get", f"{kind}/{name}", "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
        found[f"{kind}/{namespace}/{name}"] = json.loads(out) if out.strip() else None
    return found


def _events(events: list[Any]) -> list[dict[str, Any]]:
    """(type, name, op) of each resource the engine stepped on, and the diagnostics, as plain data."""
    steps = [{"type": e.resource_pre_event.metadata.type, "urn": e.resource_pre_event.metadata.urn,
              "op": str(e.resource_pre_event.metadata.op.value)} for e in events if e.resource_pre_event]
    diags = [{"severity": e.diagnostic_event.severity, "message": e.diagnostic_event.message}
             for e in events if e.diagnostic_event]
    return steps + diags


def kubernetes_lifecycle(bin_dir: str, stack: str, config: dict[str, Any], kubeconfig: str, kubectl: str,
                         objects: list[tuple[str, str, str]], changed_config: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes-only stack's whole life under the real CLI, against a real control plane (the kubeconfig's):
    `up`, what the cluster then holds of `objects`, the exported state, `preview --expect-no-changes`, a preview
    and an `up` with `changed_config`, what the cluster then holds, `destroy`, and what it holds last.
    Run through tools.engine.isolated; returns plain data (each step: ok, stdout, error, events)."""
    from pulumi import automation as auto

    kubeconfig_text = Path(kubeconfig).read_text()
    result: dict[str, Any] = {}

    def step(name: str, fn, **kwargs: Any) -> None:
        events: list[Any] = []
        try:
            out = fn(color="never", on_event=events.append, **kwargs)
            summary = getattr(out, "change_summary", None) or getattr(out.summary, "resource_changes", None) or {}
            result[name] = {"ok": True, "stdout": out.stdout, "error": "",
                            "summary": {str(getattr(k, "value", k)): v for k, v in summary.items()}}
        except auto.errors.CommandError as e:
            text = str(e)
            result[name] = {"ok": False, "stdout": text.split(" stdout: ", 1)[-1].rsplit(" stderr: ", 1)[0],
                            "error": text.rsplit(" stderr: ", 1)[-1], "summary": {}}
        result[name]["events"] = _events(events)

    with workspace(stack, Path(bin_dir), settings=(dict(config), ["kubeconfig"]),
                   secrets={"kubeconfig": kubeconfig_text}) as ws:
        st = ws.stack
        step("up", st.up)
        result["after_up"] = _cluster_objects(kubectl, kubeconfig, objects)
        result["state"] = ws.cli("stack", "export", check=False).stdout
        result["stack_file"] = (Path(st.workspace.work_dir) / f"Pulumi.{stack}.yaml").read_text()
        step("again", st.preview, expect_no_changes=True)
        settings_file = Path(st.workspace.work_dir) / f"Pulumi.{stack}.yaml"
        settings = yaml.safe_load(settings_file.read_text())
        settings["config"].update(changed_config)  # as workspace() wrote the config: structured values
        settings_file.write_text(yaml.safe_dump(settings, sort_keys=True))
        step("changed_preview", st.preview)
        step("changed_up", st.up)
        result["after_change"] = _cluster_objects(kubectl, kubeconfig, objects)
        step("destroy", st.destroy)
        result["after_destroy"] = _cluster_objects(kubectl, kubeconfig, objects)
    return result


def kubernetes_up(bin_dir: str, stack: str, config: dict[str, Any], kubeconfig: str) -> dict[str, Any]:
    """`pulumi up` of a Kubernetes-only stack against the kubeconfig's cluster, then `destroy`: (ok, stdout, error, diagnostics)."""
    from pulumi import automation as auto

    events: list[Any] = []
    with workspace(stack, Path(bin_dir), settings=(dict(config), ["kubeconfig"]),
                   secrets={"kubeconfig": Path(kubeconfig).read_text()}) as ws:
        try:
            out = ws.stack.up(color="never", on_event=events.append)
            result = {"ok": True, "stdout": out.stdout, "error": ""}
        except auto.errors.CommandError as e:
            text = str(e)
            result = {"ok": False, "stdout": text.split(" stdout: ", 1)[-1].rsplit(" stderr: ", 1)[0],
                      "error": text.rsplit(" stderr: ", 1)[-1]}
        result["events"] = _events(events)
        ws.stack.destroy(color="never")
    return result
