"""The burn-in gate's phase (scripts/guest/burn-in.sh) for one node, with its Jobs' manifests (issue 27).

Pure: from the config and render/burnin.node_plans. The same phase runs at the first deploy (mode deploy,
after the readiness gate: it cordons the node, burns it in, uncordons it on success) and in every upgrade
wave (mode upgrade, between upgrade-verify and uncordon: drain already cordoned it). stacks/compose.py wires
the first; render/guest_scripts.upgrade_phases places the second.
"""

from __future__ import annotations

import json
from typing import Any

from render.burnin import NodePlan
from render.guest_scripts import Phase
from render.k8s_manifests import BURNIN_NAMESPACE, SMOKE_NAMESPACE, burnin_job_names, burnin_jobs


def node_jobs(plan: NodePlan, cfg, runtime_class_name: str | None, resource: str) -> list[dict[str, Any]]:
    """The node's Namespace and Jobs, as the gate applies them (and the plan shows them)."""
    taints = tuple(cfg.kubernetes.node_taints or ()) if cfg.kubernetes is not None else ()
    return burnin_jobs(plan.node, plan.gpus, plan.request, cfg.burn_in, cfg.addons, runtime_class_name, resource, taints)


def burnin_phase(plan: NodePlan, cfg, mode: str, runtime_class_name: str | None, resource: str, kubeconfig_on_stdin: bool) -> Phase:
    """Phase `burn-in` for one node; mode `deploy` or `upgrade`."""
    assert mode in ("deploy", "upgrade"), mode
    objects = node_jobs(plan, cfg, runtime_class_name, resource)
    jobs = [o["metadata"]["name"] for o in objects if o["kind"] == "Job"]
    order = [n for n in burnin_job_names(plan.node) if n in jobs]
    exp = plan.expected
    return Phase("burn-in", {
        "GS_NODE_NAME": plan.node,
        "GS_BURNIN_MODE": mode,
        "GS_BURNIN_NAMESPACE": BURNIN_NAMESPACE,
        # gpu-stack's own GPU pods (the burn-in Jobs, the smoke Job that may run beside a first burn-in): they do
        # not make a node "already serving"
        "GS_OWN_NAMESPACES": f"{BURNIN_NAMESPACE} {SMOKE_NAMESPACE}",
        "GS_BURNIN_JOBS": " ".join(order),
        "GS_BURNIN_MANIFEST": json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, sort_keys=True, separators=(",", ":")),
        "GS_EXPECTED_BUSBW": "" if exp.busbw_gbps is None else f"{exp.busbw_gbps:g}",
        "GS_EXPECTED_ORIGIN": f"{exp.origin}: {exp.source}",
        "GS_MIN_FRACTION": f"{cfg.burn_in.min_busbw_fraction:g}",
        "GS_P2P_REQUIRED": "1" if exp.p2p_required and plan.gpus > 1 else "0",
        "GS_GATE_TIMEOUT": str(cfg.burn_in.timeout_seconds),
        "GS_GATE_INTERVAL": "5",
        "GS_KUBECONFIG_STDIN": "1" if kubeconfig_on_stdin else "0",
    }, stdin_secret="kubeconfig" if kubeconfig_on_stdin else None, long_running=True)


def plan_summary(cfg) -> dict[str, Any]:
    """For the plan (burn-in.json) and the `burnInPlan` output: per node, the Jobs and the expected busbw with its origin."""
    from render.burnin import node_plans, not_run_reason, skipped_nodes
    reason = not_run_reason(cfg)
    if reason is not None:
        return {"enabled": False, "reason": reason}
    return {
        "enabled": True, "dcgmLevel": cfg.burn_in.dcgm_level, "nccl": cfg.burn_in.nccl, "minBusbwFraction": cfg.burn_in.min_busbw_fraction,
        "nodes": {name: {"gpus": p.gpus, "request": p.request, "jobs": [n for n in burnin_job_names(name) if n.endswith("-dcgm") or (cfg.burn_in.nccl and p.gpus > 1)],
                         "expectedBusbwGbps": p.expected.busbw_gbps, "origin": p.expected.origin, "source": p.expected.source,
                         "p2pRequired": p.expected.p2p_required and p.gpus > 1}
                  for name, p in sorted(node_plans(cfg).items())},
        "skipped": skipped_nodes(cfg),
    }


def _job_logs(stdout: str) -> dict[str, str]:
    """`--- burn-in <job> ---` blocks of the gate's stdout -> job name -> its log."""
    logs: dict[str, str] = {}
    current = None
    for line in (stdout or "").splitlines():
        if line.startswith("--- burn-in ") and line.endswith(" ---") and line != "--- burn-in ---":
            current = line.removeprefix("--- burn-in ").removesuffix(" ---")
            logs[current] = ""
        elif line == "--- burn-in ---":
            current = None
        elif current is not None:
            logs[current] += line + "\n"
    return logs


def _section(log: str, name: str) -> str | None:
    marker = f"--- {name} ---\n"
    if marker not in log:
        return None
    body = log.split(marker, 1)[1]
    out = []
    for line in body.splitlines():
        if line.startswith("--- ") and line.endswith(" ---"):
            break
        out.append(line)
    return "\n".join(out) + "\n"


def parse_gate_output(stdout: str, plan: NodePlan, min_fraction: float) -> dict[str, Any]:
    """The gate's stdout -> the node's entry of the `burnIn` stack output (render/burnin.Verdict.as_output)."""
    from render.burnin import Gpu, evaluate
    if "skipped (nothing rolled out)" in (stdout or ""):
        return {"skipped": "nothing rolled out"}
    if "skipped (already serving)" in (stdout or ""):
        return {"skipped": "already serving: burns in at its next upgrade wave"}
    logs = _job_logs(stdout)
    dcgm_log = next((v for k, v in logs.items() if k.endswith("-dcgm")), "")
    nccl_log = next((v for k, v in logs.items() if k.endswith("-nccl")), None)
    gpus = []
    for row in (_section(dcgm_log, "gpus") or "").splitlines():
        parts = [p.strip() for p in row.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append(Gpu(int(parts[0]), parts[1], parts[2]))
    verdict = evaluate(plan.node, gpus, plan.expected, min_fraction=min_fraction, dcgm_text=_section(dcgm_log, "dcgm"),
                       nccl_text=None if nccl_log is None else _section(nccl_log, "nccl"),
                       p2p_text=_section(dcgm_log, "p2p") if plan.expected.p2p_required and plan.gpus > 1 else None)
    return {**verdict.as_output(), "expectedOrigin": plan.expected.origin}
