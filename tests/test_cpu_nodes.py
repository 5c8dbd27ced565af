"""A VM without GPUs (a CPU-only control plane) is no GPU node (issue 26, item 2).

It gets no nouveau/driver/CUDA phases, no GPU label or taint, a verify that never asks nvidia-smi,
no upgrade-driver/upgrade-reboot steps and no readiness count; convergence/analysis.py rule_cpu_nodes
flags a plan that would give such a node a GPU label, taint or GPU DaemonSet.
"""

from __future__ import annotations

import copy

import pytest

from convergence.analysis import build_cluster, check, runtime_handlers
from render.guest_scripts import guest_phases, render_script, upgrade_phases
from render.verify_output import parse_verify_output
from stacks.addons import expected_allocatable
from stacks.load import parse_stack_config
from tests.conftest import require_tool, stack_file
from tests.support.guest_sandbox import GuestSandbox
from tests.test_convergence import add_objects, edit, edit_text, program_plan
from tests.test_guest_scripts import SECRETS, TOKEN, run_all

GPU_PHASES = {"nouveau", "nouveau-check", "driver", "cuda"}


def mixed(control_plane_on_cpu: bool, family: str = "ubuntu", **kubernetes) -> dict:
    """dev's GPU VM plus a CPU-only VM cp-0 (no gpus key), mode init; the first VM runs kubeadm init."""
    raw = copy.deepcopy(stack_file("dev"))
    if family == "rhel":
        raw["guest"]["os"] = {"family": "rhel", "version": "9"}
    cpu = {k: v for k, v in raw["vms"][0].items() if k != "gpus"}
    cpu.update(name="cp-0", vcpus=4, memoryGib=16)
    raw["vms"] = [cpu, raw["vms"][0]] if control_plane_on_cpu else [raw["vms"][0], cpu]
    raw["kubernetes"].update(kubernetes)
    return raw


def phases(raw: dict, name: str):
    cfg, _ = parse_stack_config(raw, SECRETS)
    index = [vm.name for vm in cfg.vms].index(name)
    role = "init" if index == 0 else "join"
    return cfg, cfg.vms[index], role, guest_phases(cfg.vms[index], cfg.guest, cfg.kubernetes, role)


@pytest.mark.parametrize("on_cpu", [True, False], ids=["control-plane-on-cpu-vm", "control-plane-on-gpu-vm"])
def test_cpu_vm_gets_no_gpu_phases_label_or_taint(on_cpu):
    raw = mixed(on_cpu, nodeLabels={"nvidia.com/gpu.present": "true", "team": "ml"},
                nodeTaints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "PreferNoSchedule"}])
    cfg, vm, role, cpu = phases(raw, "cp-0")
    names = [p.name for p in cpu]
    assert not GPU_PHASES & set(names), names
    assert {"container-runtime", "kubernetes", "verify"} <= set(names)
    k8s = next(p for p in cpu if p.name == "kubernetes")
    assert k8s.params["GS_NODE_LABELS"] == "" and k8s.params["GS_NODE_TAINTS"] == ""
    verify = next(p for p in cpu if p.name == "verify")
    assert verify.params["GS_GPU_COUNT"] == "0"
    body = render_script("verify", verify.params).split("# Phase: verify", 1)[1]
    assert not [line for line in body.splitlines() if "nvidia-smi" in line and not line.lstrip().startswith("#")]
    # no toolkit, no NVIDIA repository, no nvidia runtime on the VM without GPUs (issue 26 item 2)
    runtime = next(p for p in cpu if p.name == "container-runtime")
    assert (runtime.params["GS_TOOLKIT_VERSION"], runtime.params["GS_NCT_REPO"], runtime.params["GS_NVIDIA_DEFAULT"]) == ("", "", "0")
    assert next(p for p in cpu if p.name == "preflight").params["GS_NCT_REPO"] == ""
    # the GPU VM keeps all of it
    _, _, _, gpu = phases(raw, "gpu-dev-0")
    assert {"nouveau", "nouveau-check", "driver"} <= {p.name for p in gpu}
    gk8s = next(p for p in gpu if p.name == "kubernetes")
    assert gk8s.params["GS_NODE_LABELS"] == "nvidia.com/gpu.present=true team=ml"
    assert gk8s.params["GS_NODE_TAINTS"] == "nvidia.com/gpu=true:PreferNoSchedule"
    # day 2: no driver steps, and a driver version that upgrade-check/-verify find equal to the (absent) loaded one
    up = upgrade_phases(vm, cpu, cfg.fleet, role, control_plane=role == "init", gpu_resource="nvidia.com/gpu",
                        expected_allocatable=None, plugin_logs="", kubeconfig_on_stdin=False, family=cfg.guest.os.family)
    up_names = [p.name for p in up]
    assert "upgrade-driver" not in up_names and "upgrade-reboot" not in up_names
    assert all(p.params.get("GS_TOOLKIT_VERSION", "") == "" for p in up), [p.name for p in up if p.params.get("GS_TOOLKIT_VERSION")]
    check_params = next(p for p in up if p.name == "upgrade-check").params
    assert check_params["GS_GPU_COUNT"] == "0" and check_params["GS_DRIVER_VERSION"] == "" and check_params["GS_NVSWITCH_COUNT"] == "0"
    # readiness: the CPU VM expects no GPU allocatable
    assert expected_allocatable(cfg) == {"gpu-dev-0": {"nvidia.com/gpu": 4}}


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
@pytest.mark.parametrize("on_cpu", [True, False], ids=["control-plane-on-cpu-vm", "control-plane-on-gpu-vm"])
def test_cpu_vm_phases_pass_in_the_sandbox_without_nvidia(tmp_path, family, on_cpu):
    require_tool("openssl")
    raw = mixed(on_cpu, family, nodeLabels={"nvidia.com/gpu.present": "true"})
    _, _, role, cpu = phases(raw, "cp-0")
    sb = GuestSandbox(tmp_path, family, lspci_gpus=0, node={"labels": {}, "taints": []})
    results = run_all(sb, cpu)
    cmds = [c["cmd"] for c in sb.calls()]
    assert "nvidia-smi" not in cmds
    mutating = sb.mutating()
    assert not [c for c in mutating if "nvidia-driver" in c or "nouveau" in c], mutating
    # no NVIDIA container toolkit, no nvidia runtime (issue 26 item 2)
    assert not [c for c in cmds if c.startswith("nvidia-ctk")], cmds
    assert not [c for c in mutating if "nvidia-container-toolkit" in c or "libnvidia-container" in c], mutating
    assert not [c for c in mutating if c.startswith("kubectl label") or c.startswith("kubectl taint node cp-0 nvidia")], mutating
    assert parse_verify_output(results["verify"].stdout) == {"gpus": [], "driverVersion": None, "cudaVersion": None}
    kubelet = sb.root / ("etc/default/kubelet" if family == "ubuntu" else "etc/sysconfig/kubelet")
    assert "nvidia" not in kubelet.read_text()
    # converged: a second run changes nothing
    sb.clear_calls()
    run_all(sb, cpu)
    assert sb.mutating() == []


@pytest.fixture(scope="module", params=[True, False], ids=["control-plane-on-cpu-vm", "control-plane-on-gpu-vm"])
def mixed_plan(request):
    raw = mixed(request.param)
    cfg, _ = parse_stack_config(raw, SECRETS)
    return program_plan(raw), cfg


def test_mixed_stack_plans_and_the_cpu_node_rule_passes(mixed_plan):
    plan, cfg = mixed_plan
    assert not [k for k in plan.files if k.startswith("guest/cp-0") and ("driver" in k or "nouveau" in k or "reboot" in k)]
    assert "guest/gpu-dev-0-upgrade-driver.update.sh" in plan.files
    violations = check(plan, cfg, rules=["cpu-nodes", "scheduling", "runtime"])
    assert not violations, "\n".join(map(str, violations))
    # the VM without GPUs has no nvidia handler; the RuntimeClass keeps pods naming it on the GPU nodes
    assert runtime_handlers(plan.files["guest/cp-0-guest-nvidia-runtime-container-runtime.sh"]) == {"runc"}
    assert runtime_handlers(plan.files["guest/gpu-dev-0-guest-nvidia-runtime-container-runtime.sh"]) == {"runc", "nvidia"}
    rc = next(r for r in plan.resources if r.get("type") == "kubernetes:yaml/v2:ConfigGroup" and r["name"] == "nvidia-runtime-class-objects")
    assert rc["inputs"]["objs"][0]["scheduling"] == {"nodeSelector": {"nvidia.com/gpu.present": "true"}}


def runtime_workload(name: str, **spec) -> dict:
    """A Deployment whose pods name runtimeClassName nvidia; it tolerates every taint (as node agents do), so only its
    selector, its GPU request or the RuntimeClass keeps it off a node."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "ml-dev"},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "runtimeClassName": "nvidia", "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "app", "image": "nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04", **spec.pop("container", {})}],
                **spec}}}}


def test_runtime_rule_flags_a_workload_that_can_land_on_a_node_without_the_handler(mixed_plan):
    """Kubernetes semantics: a pod naming runtimeClassName nvidia fails only where it lands on a node without the handler.
    Without the RuntimeClass's scheduling the plan's own workloads still cannot reach cp-0 (each requests a GPU or selects
    a GPU label); a workload with neither can, and the rule names it; the class's scheduling.nodeSelector keeps it off."""
    plan, cfg = mixed_plan
    path = next(k for k in plan.files if k.startswith("manifests/nvidia-runtime-class-objects/"))
    assert "scheduling" in plan.files[path]
    bare = edit(plan, path, lambda d: d.pop("scheduling"))
    assert [str(v) for v in check(bare, cfg, rules=["runtime"])] == []
    anywhere = add_objects(bare, "team-apps", runtime_workload("notebook"))
    found = [str(v) for v in check(anywhere, cfg, rules=["runtime"])]
    assert len(found) == 1 and "handler 'nvidia' is not configured on node cp-0" in found[0], found
    assert "Deployment ml-dev/notebook can run" in found[0] and "it has no GPUs" in found[0] and "scheduling.nodeSelector" in found[0]
    # the same workload, kept off cp-0 by the class's scheduling, its own nodeSelector, or a GPU request
    assert check(add_objects(plan, "team-apps", runtime_workload("notebook")), cfg, rules=["runtime"]) == []
    selects = runtime_workload("notebook", nodeSelector={"nvidia.com/gpu.present": "true"})
    requests = runtime_workload("trainer", container={"resources": {"limits": {"nvidia.com/gpu": 1}}})
    assert check(add_objects(bare, "team-apps", selects, requests), cfg, rules=["runtime"]) == []


def test_the_gpu_operator_beside_a_cpu_only_vm_converges():
    """The fleet example with the GPU Operator instead of the device plugin: the operator's RuntimeClass has no
    scheduling, but every operand that names it selects the operator's nvidia.com/gpu.deploy.* labels, which only GPU
    nodes carry, and gpu-stack's own Jobs request GPUs: nothing naming nvidia can land on cp-1. A workload of the
    user's that names it without a GPU request or selector could, and is flagged."""
    raw = stack_file("fleet")
    raw["addons"].pop("devicePlugin", None)
    raw["addons"]["gpuOperator"] = {"enabled": True}
    cfg, _ = parse_stack_config(raw, SECRETS)
    assert [vm.name for vm in cfg.vms if not vm.gpus] == ["cp-1"]
    plan = program_plan(raw)
    c = build_cluster(plan, cfg)
    [rc] = [o for o in c.of_kind("RuntimeClass")]
    assert rc["metadata"]["name"] == "nvidia" and "scheduling" not in rc and "GPU Operator" in rc["_origin"]
    named = [w.id for w in c.workloads if w.spec.get("runtimeClassName") == "nvidia"]
    assert "DaemonSet gpu-operator/nvidia-dcgm-exporter" in named and any(w.startswith("Job gpu-stack-burnin/") for w in named), named
    assert c.nodes[0].name == "cp-1" and c.nodes[0].handlers == {"runc"}
    violations = check(plan, cfg)
    assert not violations, "\n".join(map(str, violations))
    found = [str(v) for v in check(add_objects(plan, "team-apps", runtime_workload("notebook")), cfg, rules=["runtime"])]
    assert len(found) == 1 and "handler 'nvidia' is not configured on node cp-1" in found[0] and "Deployment ml-dev/notebook" in found[0], found


def test_rule_flags_a_gpu_label_or_taint_on_a_node_without_gpus(mixed_plan):
    plan, cfg = mixed_plan
    path = "guest/cp-0-guest-kubernetes.sh"
    if "export GS_NODE_LABELS=''" not in plan.files[path]:
        pytest.skip("a joining VM's header is known at deploy time only")
    bad = edit_text(plan, path, "export GS_NODE_LABELS=''", "export GS_NODE_LABELS=nvidia.com/gpu.present=true")
    bad = edit_text(bad, path, "export GS_NODE_TAINTS=''", "export GS_NODE_TAINTS=nvidia.com/gpu=true:NoSchedule")
    found = [str(v) for v in check(bad, cfg, rules=["cpu-nodes"])]
    assert any("Node cp-0" in v and "GPU label nvidia.com/gpu.present=true" in v and "kubernetes.nodeLabels" in v for v in found), found
    assert any("Node cp-0" in v and "GPU taint nvidia.com/gpu=true:NoSchedule" in v and "kubernetes.nodeTaints" in v for v in found), found


def test_rule_flags_a_gpu_daemonset_that_lands_on_a_node_without_gpus(mixed_plan):
    plan, cfg = mixed_plan
    path = next(k for k in plan.files if k.endswith("daemonset-gpu-monitoring-dcgm-exporter.yaml"))
    # a hand-made mistake: "not a node whose GPU label says false" also matches a node with no GPU label at all
    not_false = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["false"]}]}]}}

    def loosen(d):
        d["spec"]["template"]["spec"].pop("nodeSelector")
        d["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": not_false}
    bad = edit(plan, path, loosen)
    found = [str(v) for v in check(bad, cfg, rules=["cpu-nodes"])]
    assert any("DaemonSet gpu-monitoring/dcgm-exporter" in v and "node cp-0, which has no GPUs" in v for v in found), found


def test_verify_output_without_gpus_parses_as_none():
    assert parse_verify_output("--- gpu-inventory ---\n") == {"gpus": [], "driverVersion": None, "cudaVersion": None}
    with pytest.raises(ValueError):
        parse_verify_output("--- gpu-inventory ---\n0, NVIDIA L40S, GPU-1, 00000000:0D:00.0, 580.173.02, 46068 MiB\n")


def test_the_fleet_example_has_a_cpu_only_control_plane():
    """Issue 26 item 2's example: Pulumi.fleet.yaml's first VM, cp-1, has no GPUs and runs kubeadm init; the four GPU VMs
    join it. It gets no GPU label or taint and no GPU phases, the readiness gate counts only the GPU VMs, and the whole
    plan passes the convergence check (docs/FLEET.md)."""
    raw = stack_file("fleet")
    cfg, _ = parse_stack_config(raw, SECRETS)
    cpu = [vm.name for vm in cfg.vms if not vm.gpus]
    assert cpu == ["cp-1"] and cfg.vms[0].name == "cp-1" and cfg.kubernetes.mode == "init"
    _, _, role, cp = phases(raw, "cp-1")
    assert role == "init" and not GPU_PHASES & {p.name for p in cp}
    k8s = next(p for p in cp if p.name == "kubernetes")
    assert k8s.params["GS_NODE_LABELS"] == "" and k8s.params["GS_NODE_TAINTS"] == ""
    assert expected_allocatable(cfg) == {vm.name: {"nvidia.com/gpu": 4} for vm in cfg.vms if vm.gpus}
    assert "cp-1" not in expected_allocatable(cfg) and len(expected_allocatable(cfg)) == 4
    plan = program_plan(raw)
    assert "export GS_GATE_NODES='gpu-1-0=4 gpu-1-1=4 gpu-2-0=4 gpu-2-1=4'" in plan.files["guest/readiness-gate.sh"]
    violations = check(plan, cfg)
    assert not violations, "\n".join(map(str, violations))
