"""The burn-in gate script (scripts/guest/burn-in.sh) in the guest sandbox, on the real captures; its Jobs' manifests.

The sandbox's kubectl (tests/support/guest_stubs.py) serves each Job's log from the captures in
tests/fixtures/burn-in/, framed by the section markers the Jobs print (render/k8s_manifests.burnin_jobs).
Every scenario also runs render/burnin.evaluate on the same text: the script and the `burnIn` output agree.
"""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from render.burnin import Gpu, NodePlan, evaluate, expected_busbw
from render.burnin_gate import burnin_phase, node_jobs, plan_summary
from render.k8s_manifests import UNSCHEDULABLE_TOLERATION
from tests.conftest import ROOT, stack_file
from tests.support.guest_sandbox import GuestSandbox
from tests.test_burnin import CUDA_ERROR, DCGM_4, DCGM_FM_DOWN, DCGM_PASS, DCGM_PERSISTENCE, H100_BUS, H100_RUN, TOPO_P2P, text

NODE = "gpu-0"
NS = "gpu-stack-burnin"
SECRETS = {"sshPrivateKey", "grafanaAdminPassword", "kubevirtKubeconfig"}


def _cfg(stack: str = "prod", **burn_in):
    from stacks.load import parse_stack_config
    raw = stack_file(stack)
    if burn_in:
        raw["burnIn"] = {**raw.get("burnIn", {}), **burn_in}
    return parse_stack_config(raw, SECRETS, stack)[0]


def inventory(n: int = 8) -> str:
    # the shape `nvidia-smi --query-gpu=index,uuid,pci.bus_id --format=csv,noheader` prints (doctor/nvidia_smi.parse_query_csv)
    return "".join(f"{i}, GPU-{i:08d}-0000-0000-0000-000000000000, 00000000:{H100_BUS[i].upper()}:00.0\n" for i in range(n))


def gpus(n: int = 8) -> list[Gpu]:
    return [Gpu(i, f"GPU-{i:08d}-0000-0000-0000-000000000000", f"00000000:{H100_BUS[i].upper()}:00.0") for i in range(n)]


def dcgm_log(dcgm: str, p2p: str = "", n: int = 8) -> str:
    return f"--- gpus ---\n{inventory(n)}--- p2p ---\n{p2p}--- dcgm ---\n{dcgm}--- end 0 ---\n"


def nccl_log(nccl: str) -> str:
    return f"--- nccl ---\n{nccl}--- end 0 ---\n"


def phase(mode: str = "deploy", expected: float | None = 478.1, p2p: bool = False, nccl: bool = True, fraction: float = 0.8):
    exp = expected_busbw("H100-SXM5-80GB", 8)
    exp = type(exp)(exp.model, 8, expected, "catalog" if expected else "n/a", exp.source, p2p)
    cfg = _cfg("prod", nccl=nccl, minBusbwFraction=fraction)
    return burnin_phase(NodePlan(NODE, 8, 8, exp), cfg, mode, "nvidia", "nvidia.com/gpu", kubeconfig_on_stdin=False)


def sandbox(tmp_path, dcgm: str, nccl: str | None, states=("Complete",), unschedulable=False, rollout="driver 1->2") -> GuestSandbox:
    logs = {f"burnin-{NODE}-dcgm": dcgm}
    jobs = {f"{NS}/burnin-{NODE}-dcgm": list(states)}
    if nccl is not None:
        logs[f"burnin-{NODE}-nccl"] = nccl
        jobs[f"{NS}/burnin-{NODE}-nccl"] = list(states)
    sb = GuestSandbox(tmp_path, "ubuntu", cluster={"nodes": {}, "jobs": jobs, "logs": logs},
                      node={"labels": {}, "taints": [], "unschedulable": unschedulable,
                            "annotations": {"gpu-stack.io/rollout": rollout, **({"gpu-stack.io/cordoned": "true"} if unschedulable else {})}})
    (sb.root / "etc/kubernetes").mkdir(parents=True)
    (sb.root / "etc/kubernetes/admin.conf").write_text("apiVersion: v1\nkind: Config\n")
    return sb


def run(sb: GuestSandbox, ph):
    return sb.run(ph, params={**ph.params, "GS_GATE_TIMEOUT": "2", "GS_GATE_INTERVAL": "0.2"})


def python_verdict(dcgm: str, nccl: str | None, expected: float | None, p2p: bool, fraction: float = 0.8):
    exp = expected_busbw("H100-SXM5-80GB", 8)
    exp = type(exp)(exp.model, 8, expected, "catalog", exp.source, p2p)
    from render.burnin import parse_topo_p2p  # noqa: F401  (the p2p text is the dcgm Job's section)
    p2p_text = dcgm.split("--- p2p ---\n", 1)[1].split("--- dcgm ---", 1)[0]
    dcgm_text = dcgm.split("--- dcgm ---\n", 1)[1].split("--- end", 1)[0]
    nccl_text = None if nccl is None else nccl.split("--- nccl ---\n", 1)[1].split("--- end", 1)[0]
    return evaluate(NODE, gpus(), exp, min_fraction=fraction, dcgm_text=dcgm_text, nccl_text=nccl_text, p2p_text=p2p_text)


def test_a_healthy_node_passes_is_uncordoned_and_the_verdicts_agree(tmp_path):
    dcgm, nccl = dcgm_log(text(DCGM_4)), nccl_log(text(H100_RUN))
    sb = sandbox(tmp_path, dcgm, nccl)
    result = run(sb, phase())
    assert result.returncode == 0, result.stderr
    assert python_verdict(dcgm, nccl, 478.1, False).ok
    calls = sb.mutating()
    assert f"kubectl cordon {NODE}" in calls and f"kubectl uncordon {NODE}" in calls
    assert calls.index(f"kubectl cordon {NODE}") < next(i for i, c in enumerate(calls) if c.startswith("kubectl apply")) < calls.index(f"kubectl uncordon {NODE}")
    state = sb.state["node"]
    assert not state["unschedulable"] and state["annotations"]["gpu-stack.io/burn-in"] == "passed"
    assert "gpu-stack.io/cordoned" not in state["annotations"]
    assert f"--- burn-in burnin-{NODE}-nccl ---" in result.stdout and f"PASS node {NODE}" in result.stdout
    applied = json.loads(sb.state["applied"][0])
    assert [o["kind"] for o in applied["items"]] == ["Namespace", "Job", "Job"]


FAILURES = [
    # (dcgm capture, p2p matrix, nccl capture, expected busbw, p2p required, words in the error)
    (DCGM_FM_DOWN, "", CUDA_ERROR, 478.1, False,
     ["all GPUs: dcgmi diag `GPU Memory` Fail", "Fabric Manager active", "all_reduce_perf failed: test: Test CUDA failure"]),
    (DCGM_PERSISTENCE, "", H100_RUN, 478.1, False,
     ["GPU 0 (GPU-00000000-0000-0000-0000-000000000000, 00000000:1B:00.0): dcgmi diag `Persistence Mode` Fail", "persistence mode"]),
    (DCGM_PASS, "", H100_RUN, 600, False, ["busbw 470.73 GB/s at 2147483648 B (the largest size) is below 0.8 x expected 600 GB/s"]),
    (DCGM_4, "p2p-n", H100_RUN, 478.1, True,
     ["link GPU 0 (GPU-00000000-0000-0000-0000-000000000000, 00000000:1B:00.0) -> GPU 5 (GPU-00000005-0000-0000-0000-000000000000, "
      "00000000:C3:00.0): P2P read NS", "24 GPU pairs not OK"]),
    # not a capture: any text without a matrix (what a failed nvidia-smi leaves) must fail where P2P is required
    (DCGM_4, "no-matrix", H100_RUN, 478.1, True, ["nvidia-smi topo -p2p r printed no matrix"]),
]


@pytest.mark.parametrize(("dcgm_name", "p2p", "nccl_name", "expected", "p2p_required", "words"), FAILURES, ids=lambda v: str(v)[:30])
def test_a_failing_node_stays_cordoned_and_the_error_names_it(tmp_path, dcgm_name, p2p, nccl_name, expected, p2p_required, words):
    matrix = text(TOPO_P2P).split("nvidia-smi topo -p2p p")[0].split("\n", 1)[1] if p2p == "p2p-n" else \
        "nvidia-smi exited before printing a matrix\n" if p2p == "no-matrix" else ""
    dcgm, nccl = dcgm_log(text(dcgm_name), matrix), nccl_log(text(nccl_name))
    sb = sandbox(tmp_path, dcgm, nccl)
    result = run(sb, phase(expected=expected, p2p=p2p_required))
    assert result.returncode != 0
    assert f"node {NODE} failed its burn-in and stays cordoned" in result.stderr
    report = result.stdout + result.stderr
    for w in words:
        assert w in report, (w, report[-3000:])
    state = sb.state["node"]
    assert state["unschedulable"] and state["annotations"]["gpu-stack.io/cordoned"] == "true"
    assert state["annotations"]["gpu-stack.io/burn-in"] == "failed" and state["labels"]["gpu-stack.io/burn-in"] == "failed"
    assert not any(c.startswith("kubectl uncordon") for c in sb.mutating())
    assert not python_verdict(dcgm, nccl, expected, p2p_required).ok  # the stack output says the same


def test_upgrade_mode_after_an_empty_rollout_does_nothing(tmp_path):
    sb = sandbox(tmp_path, "", None, unschedulable=False, rollout="none")
    result = run(sb, phase("upgrade"))
    assert result.returncode == 0, result.stderr
    assert sb.mutating() == [] and "skipped (nothing rolled out)" in result.stdout


def test_upgrade_mode_leaves_the_uncordon_to_its_phase_and_a_failure_keeps_the_drain_cordon(tmp_path):
    sb = sandbox(tmp_path, dcgm_log(text(DCGM_PASS)), nccl_log(text(H100_RUN)), unschedulable=True)
    assert run(sb, phase("upgrade")).returncode == 0
    assert sb.state["node"]["unschedulable"] and not any(c.startswith("kubectl uncordon") for c in sb.mutating())
    sb = sandbox(tmp_path / "b", dcgm_log(text(DCGM_FM_DOWN)), nccl_log(text(CUDA_ERROR)), unschedulable=True)
    assert run(sb, phase("upgrade")).returncode != 0 and sb.state["node"]["unschedulable"]


def test_a_job_that_never_finishes_fails_the_gate(tmp_path):
    sb = sandbox(tmp_path, "", "", states=())
    result = run(sb, phase())
    assert result.returncode != 0 and "did not finish in 2s (burnIn.timeoutSeconds)" in result.stderr
    assert sb.state["node"]["unschedulable"]


# --- the manifests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["prod", "dev", "fleet", "kubevirt"])
def test_burnin_jobs_validate_request_all_gpus_pin_and_tolerate(stack):
    from render.burnin import node_plans
    cfg = _cfg(stack)
    plans = node_plans(cfg)
    assert plans
    for name, plan in plans.items():
        objects = node_jobs(plan, cfg, "nvidia", "nvidia.com/gpu")
        for obj in objects:
            kubernetes_validate.validate(obj, "1.35", strict=True)
        jobs = [o for o in objects if o["kind"] == "Job"]
        assert len(jobs) == (2 if cfg.burn_in.nccl and plan.gpus > 1 else 1)
        for job in jobs:
            spec = job["spec"]["template"]["spec"]
            assert spec["nodeSelector"] == {"kubernetes.io/hostname": name}
            assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": str(plan.request)}
            assert UNSCHEDULABLE_TOLERATION in spec["tolerations"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_plan_summary_says_where_each_figure_comes_from():
    prod = plan_summary(_cfg("prod"))
    (node,) = prod["nodes"].values()
    assert node["origin"] == "config" and node["expectedBusbwGbps"] == 200 and node["jobs"] == ["burnin-ubuntu-gpu-dcgm", "burnin-ubuntu-gpu-nccl"]
    assert plan_summary(_cfg("prod", enabled=False)) == {"enabled": False, "reason": "burnIn.enabled is false"}


def test_the_script_is_in_the_rendered_phase():
    ph = phase()
    assert ph.name == "burn-in" and ph.params["GS_BURNIN_JOBS"] == f"burnin-{NODE}-dcgm burnin-{NODE}-nccl"
    assert (ROOT / "scripts/guest/burn-in.sh").exists()


def test_the_stack_output_parses_the_gates_stdout(tmp_path):
    from render.burnin_gate import parse_gate_output
    sb = sandbox(tmp_path, dcgm_log(text(DCGM_4)), nccl_log(text(H100_RUN)))
    result = run(sb, phase())
    assert result.returncode == 0, result.stderr
    exp = expected_busbw("H100-SXM5-80GB", 8)
    exp = type(exp)(exp.model, 8, exp.busbw_gbps, exp.origin, exp.source, False)  # as phase() renders it: P2P not required
    out = parse_gate_output(result.stdout, NodePlan(NODE, 8, 8, exp), 0.8)
    assert out == {"ok": True, "dcgm": "pass", "busbwGbps": 470.73, "expectedBusbwGbps": 478.1, "p2p": "skipped",
                   "failures": [], "expectedOrigin": "catalog"}
    required = type(exp)(exp.model, 8, exp.busbw_gbps, exp.origin, exp.source, True)  # the empty p2p section then fails
    assert parse_gate_output(result.stdout, NodePlan(NODE, 8, 8, required), 0.8)["p2p"] == "missing"
    assert parse_gate_output("--- burn-in ---\nnode gpu-0 skipped (nothing rolled out)\n", NodePlan(NODE, 8, 8, exp), 0.8) == {"skipped": "nothing rolled out"}


def test_the_jobs_tolerate_the_configured_node_taints():
    from render.burnin import node_plans
    cfg = _cfg("prod")
    from config.models import Taint
    taint = Taint(key="example.com/reserved", value="gpu", effect="NoExecute")
    cfg = cfg.model_copy(update={"kubernetes": cfg.kubernetes.model_copy(update={"node_taints": (taint,)})})
    (plan,) = node_plans(cfg).values()
    for job in [o for o in node_jobs(plan, cfg, None, "nvidia.com/gpu") if o["kind"] == "Job"]:
        assert {"key": "example.com/reserved", "operator": "Equal", "value": "gpu", "effect": "NoExecute"} in job["spec"]["template"]["spec"]["tolerations"]


def test_the_doctor_bundle_keeps_the_burn_in_verdict_and_output():
    from doctor.diagnosis import Evidence, Expected, evidence_files
    log = dcgm_log(text(DCGM_FM_DOWN))
    ev = Evidence(k8s={"node": {"metadata": {"name": NODE, "labels": {"gpu-stack.io/burn-in": "failed"}}, "status": {}}},
                  pod_logs={f"gpu-stack-burnin/burnin-{NODE}-dcgm-abcde": log, "default/train-0": "epoch 1"})
    files = evidence_files(Expected(vm=NODE, gpu_count=8), ev, [])
    bundle = files["kubernetes/burn-in.txt"]
    assert bundle.startswith(f"node {NODE}: burn-in failed\n") and "'system not yet initialized'" in bundle and "epoch 1" not in bundle


def test_a_node_that_already_serves_gpu_pods_is_not_cordoned_or_burned_in(tmp_path):
    """A fleet that upgrades gpu-stack to the release that brought the gate gets the deploy-mode phase as a new
    resource on nodes that carry work: no cordon, no Jobs, a skip the stack output reads; a node whose only GPU
    pods are its own burn-in Jobs (a re-run) and a node with CPU-only pods still burn in."""
    from render.burnin_gate import parse_gate_output

    sb = sandbox(tmp_path, DCGM_PASS, None)
    state = sb.state
    state["cluster"]["pods"] = [{"node": NODE, "namespace": "ml", "phase": "Running", "requests": {"cpu": "4", "nvidia.com/gpu": "8"}}]
    (sb.tmp / "state.json").write_text(json.dumps(state))
    ph = phase(nccl=False)
    done = run(sb, ph)
    assert done.returncode == 0, done.stderr
    assert "skipped (already serving)" in done.stdout
    assert not sb.mutating(), sb.mutating()
    assert not sb.state["node"]["unschedulable"]
    assert parse_gate_output(done.stdout, NodePlan(NODE, 8, 8, None), 0.8) == {"skipped": "already serving: burns in at its next upgrade wave"}


@pytest.mark.parametrize("pods", [
    [{"node": NODE, "namespace": NS, "phase": "Running", "requests": {"nvidia.com/gpu": "8"}}],  # its own Job of a re-run
    [{"node": NODE, "namespace": "gpu-stack-smoke", "phase": "Running", "requests": {"nvidia.com/gpu": "1"}}],  # the smoke Job beside it
    [{"node": NODE, "namespace": "kube-system", "phase": "Running", "requests": {"cpu": "100m"}}],  # no GPU pod
    [{"node": "another-node", "namespace": "ml", "phase": "Running", "requests": {"nvidia.com/gpu": "8"}}],
])
def test_a_node_without_other_gpu_pods_still_burns_in(tmp_path, pods):
    sb = sandbox(tmp_path, DCGM_PASS, None)
    state = sb.state
    state["cluster"]["pods"] = pods
    (sb.tmp / "state.json").write_text(json.dumps(state))
    done = run(sb, phase(nccl=False))
    assert "skipped (already serving)" not in done.stdout
    assert f"kubectl cordon {NODE}" in sb.mutating() and any(c.startswith("kubectl apply") for c in sb.mutating()), sb.mutating()
