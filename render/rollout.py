"""The rollout: which nodes are upgraded together (waves), what a config change re-runs, and what is refused.

Pure functions of the config (waves, version checks) and of two runs'
command inputs (what re-runs). stacks/compose.py turns the waves into
dependencies between the nodes' upgrade commands; tools/plan.py writes
rollout.json from the same functions, and asks each VM's backend whether its
change restarts the VM (hypervisors/base.py vm_replacements).
"""

from __future__ import annotations

from typing import Any

from render.guest_scripts import UPGRADE_MANAGED, UPGRADE_ORDER
from config.models import StackConfig
from config.errors import ConfigIssue
from config.types import version_tuple


def waves(cfg: StackConfig) -> list[list[str]]:
    """VM names per wave: the control plane (mode init: the first VM) alone first, then fleet.maxUnavailable at a time."""
    names = [vm.name for vm in cfg.vms]
    size = max(1, cfg.fleet.max_unavailable)
    out: list[list[str]] = []
    if cfg.kubernetes is not None and cfg.kubernetes.mode == "init" and names:
        out.append([names[0]])
        names = names[1:]
    out += [names[i:i + size] for i in range(0, len(names), size)]
    return out


def kubernetes_change_issues(old: str, new: str) -> list[ConfigIssue]:
    """kubeadm's rules for kubernetes.version going from `old` (deployed) to `new`: no downgrade, one minor at a time."""
    o, n = version_tuple(old), version_tuple(new)
    if n < o:
        return [ConfigIssue("kubernetes.version", f"{new} is older than the deployed {old}; kubeadm cannot downgrade a cluster: keep {old} or go newer")]
    if n[0] != o[0] or n[1] - o[1] > 1:
        return [ConfigIssue("kubernetes.version", f"{old} to {new} skips a minor; kubeadm upgrades one minor at a time: set {o[0]}.{o[1] + 1}.x first (the next allowed version), then {new}")]
    return []


def change_issues(old: StackConfig, new: StackConfig) -> list[ConfigIssue]:
    """What the upgrade path refuses between a deployed config and the next one."""
    issues: list[ConfigIssue] = []
    if old.kubernetes is not None and new.kubernetes is not None and old.kubernetes.mode == new.kubernetes.mode:
        issues += kubernetes_change_issues(old.kubernetes.version, new.kubernetes.version)
    return issues


# --- from two runs' commands: what re-runs ----------------------------------

RERUN_INPUTS = ("create", "update", "triggers", "delete", "stdin", "environment")
"""Inputs of a remote Command whose change makes the provider run something."""


def reruns(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Command name -> 'update' | 'create' for the commands a config change runs.

    old/new: command name -> its inputs. A command with an `update` runs it on
    any change; one without is replaced or updated and runs `create` again. A
    command that is new runs its create (nothing for the upgrade phases).
    """
    out: dict[str, str] = {}
    for name, inputs in new.items():
        before = old.get(name)
        if before is None:
            if inputs.get("create"):
                out[name] = "create"
            continue
        if any(before.get(k) != inputs.get(k) for k in RERUN_INPUTS):
            out[name] = "update" if inputs.get("update") else "create"
    return out


def bootstrap_phase(node: str, command_name: str) -> str:
    """<vm>-guest-<phase> (and the runtime's <vm>-guest-nvidia-runtime-container-runtime) -> <phase>."""
    return command_name.removeprefix(f"{node}-guest-").removeprefix("nvidia-runtime-")


# --- per node: drain or not ------------------------------------------------

VERSIONED = (("kubernetes", "kubernetes"), ("nvidia-driver", "driver"), ("nvidia-container-toolkit", "nvidia-container-toolkit"))
"""versions.json components that upgrade-check compares on a node (scripts/guest/upgrade-check.sh), with rollout.json's label."""


def component_versions(versions_doc: dict[str, Any]) -> dict[str, str]:
    """versions.json (config/support.pinned_versions) -> component -> version."""
    return {str(c.get("component")): str(c.get("version")) for c in versions_doc.get("components") or [] if c.get("component")}


def version_changes(cfg: StackConfig, node: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    """What upgrade-check will find to change on `node` going from the base's versions to these: ["driver 580.65.06→595.58.03", …].

    The driver, Fabric Manager (at the driver's version, NVSwitch VMs) and the
    toolkit count only on a VM with GPUs; Kubernetes on every VM.
    """
    vm = next(v for v in cfg.vms if v.name == node)
    out = []
    for component, label in VERSIONED:
        if component != "kubernetes" and not vm.gpus:
            continue
        before, after = old.get(component), new.get(component)
        if before is None or after is None or before == after:
            continue
        out.append(f"{label} {before}→{after}")
        if component == "nvidia-driver" and vm.nvswitches:
            out.append(f"fabric manager {before}→{after}")
    return out


def node_action(entry: dict[str, Any], changes: list[str], replaced: str | None, drains: bool) -> str:
    """rollout.json's one-line verdict for a node, given what runs (entry) and what changes."""
    if replaced is not None:
        return "replace VM (restart)"
    if changes:
        return ("drain, change " if drains else "drain by hand (fleet.drainedExternally), change ") + ", ".join(changes)
    if entry["phases"] or entry.get("versionGate") or entry.get("bootstrapReruns"):
        return "re-run, no drain"
    return "nothing to run"


def rollout(cfg: StackConfig, commands: dict[str, list[str]], runs: dict[str, str] | None = None,
            changes: dict[str, list[str]] | None = None, replaced: dict[str, str] | None = None) -> dict[str, Any]:
    """rollout.json: per wave, per node, the upgrade phases with their triggers.

    commands: command name -> triggers of every command in the plan. runs: what
    a change from a base config runs (reruns()); None: no base, list every
    upgrade phase (what a version change of each step would run). With a base,
    each node also gets `action` (node_action: "re-run, no drain" when only
    gpu-stack's scripts or other inputs changed, "drain, change X→Y" when a
    version does, "replace VM (restart)"), its version `changes` and, for a
    replaced VM, `replace` (why).
    """
    out_waves = []
    for index, nodes in enumerate(waves(cfg)):
        entries = []
        for node in nodes:
            phases = []
            for phase in UPGRADE_ORDER:
                name = f"{node}-{phase}"
                if name not in commands:
                    continue
                if runs is not None and name not in runs:
                    continue
                phases.append({"phase": phase, "command": name, "triggers": [t.split(":", 1)[0] for t in commands[name]]})
            bootstrap = sorted(bootstrap_phase(node, n) for n in (runs or {}) if n.startswith(f"{node}-guest-"))
            gated = [p for p in bootstrap if p in UPGRADE_MANAGED]
            other = [p for p in bootstrap if p not in UPGRADE_MANAGED]
            entry: dict[str, Any] = {"node": node, "phases": phases}
            if runs is not None:
                entry["versionGate"] = gated
                entry["bootstrapReruns"] = other
                node_changes = (changes or {}).get(node, [])
                entry["changes"] = node_changes
                if (replaced or {}).get(node):
                    entry["replace"] = replaced[node]
                entry["action"] = node_action(entry, node_changes, (replaced or {}).get(node), f"{node}-drain" in commands)
            entries.append(entry)
        out_waves.append({"wave": index, "nodes": entries})
    result: dict[str, Any] = {
        "maxUnavailable": cfg.fleet.max_unavailable,
        "drainTimeoutSeconds": cfg.fleet.drain_timeout_seconds,
        "waves": out_waves,
    }
    if runs is not None:
        result["base"] = True
        result["otherReruns"] = sorted(n for n in runs if not any(n.startswith(f"{vm.name}-") for vm in cfg.vms))
        result["summary"] = [f"wave {w['wave']}: " + ", ".join(f"{e['node']} ({' '.join(p['phase'] for p in e['phases']) or 'nothing'}: {e['action']})" for e in w["nodes"])
                             for w in out_waves]
    return result
