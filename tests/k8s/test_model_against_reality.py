"""The convergence model's negative cases (tests/test_convergence.py) on a real control plane.

Each case changes one thing in a golden plan, as the convergence tests do; the Kubernetes rules of
convergence/analysis.py and the real API server, controllers and scheduler must give the same verdict,
object by object. The real messages are asserted where an operator reads them.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from tests.k8s.reality import Case, apply_plan, format_table, placement_mismatches, table
from tests.test_convergence import KUBE_DEV, QUOTA, add_objects, config, edit, edit_text, golden, remove, tainted_dev, without

SMOKE = "manifests/gpu-smoke-test-objects/job-gpu-stack-smoke-gpu-smoke-test.yaml"
SMOKE_ID = "Job gpu-stack-smoke/gpu-smoke-test"
WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"}, "spec": {"size": 1}}
WIDGET_CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"},
              "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced",
                       "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                           "type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}}


def _quota(key: str):
    quota = copy.deepcopy(QUOTA)
    quota["spec"]["hard"] = {key: "2"}
    plan = add_objects(remove(golden("dev"), "manifests/gpu-quotas-ml-dev"), "gpu-quotas-ml-dev", quota,
                       {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml-dev"}})
    return plan, config("dev")


def _no_gpus():
    cfg = config("dev").model_dump(by_alias=True)
    cfg["vms"][0]["gpus"] = []
    from config.models import StackConfig
    return golden("dev"), StackConfig.model_validate(cfg)


CASES = {
    # scheduling: taints and tolerations, labels and selectors, GPUs
    "dev-gpu-taint": lambda: (tainted_dev(), config("dev")),
    "dev-job-without-gpu-toleration": lambda: (edit(tainted_dev(), SMOKE, lambda d: d["spec"]["template"]["spec"].pop("tolerations")), config("dev")),
    "dev-node-without-gpu-label": lambda: (edit_text(golden("dev"), KUBE_DEV, "export GS_NODE_LABELS=nvidia.com/gpu.present=true",
                                                     "export GS_NODE_LABELS=''"), config("dev")),
    "dev-control-plane-taint-kept": lambda: (edit_text(golden("dev"), KUBE_DEV, '"${role_taint}:NoSchedule-"', '"${role_taint}:NoSchedule"'), config("dev")),
    "prod-gpu-taint": lambda: (edit_text(golden("prod"), "guest/ubuntu-gpu-guest-kubernetes.sh", "export GS_NODE_TAINTS=''",
                                         "export GS_NODE_TAINTS=nvidia.com/gpu=true:NoSchedule"), config("prod")),
    "dev-vm-without-gpus": _no_gpus,
    "prod-no-device-plugin": lambda: (edit(golden("prod"), "helm/gpu-operator.values.yaml", lambda d: d["devicePlugin"].update(enabled=False)), config("prod")),
    "dev-resource-renamed": lambda: (edit(golden("dev"), "helm/nvidia-device-plugin.values.yaml", lambda d: d["config"]["map"].update(
        default=d["config"]["map"]["default"].replace("renameByDefault: false", "renameByDefault: true"))), config("dev")),
    "prod-job-wants-9-gpus": lambda: (edit(golden("prod"), SMOKE, lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                                           .update({"nvidia.com/gpu": "9"})), config("prod")),
    # runtime: runtimeClassName names a RuntimeClass
    "dev-no-runtimeclass": lambda: (remove(golden("dev"), "manifests/nvidia-runtime-class-objects"), config("dev")),
    # crds
    "dev-cr-without-crd": lambda: (add_objects(golden("dev"), "gpu-quotas-objects", WIDGET), config("dev")),
    "dev-cr-with-crd": lambda: (add_objects(golden("dev"), "gpu-quotas-objects", WIDGET, WIDGET_CRD), config("dev")),
    # namespaces
    "dev-namespaces-missing": lambda: (without(golden("dev"), files=["manifests/gpu-smoke-test-objects/namespace-gpu-stack-smoke.yaml",
                                                                     "manifests/gpu-quotas-ml-dev/namespace-ml-dev.yaml"]), config("dev")),
    # quotas: which keys the quota admission counts
    **{f"dev-quota-{key}": (lambda key=key: _quota(key)) for key in ("requests.nvidia.com/gpu", "limits.nvidia.com/gpu", "nvidia.com/gpu")},
}
def _mixed(loosen_dcgm: bool = False):
    """tests/test_cpu_nodes.py: a CPU-only control-plane VM beside a GPU VM; optionally the DaemonSet mistake it tests."""
    from stacks.load import parse_stack_config
    from tests.test_convergence import program_plan
    from tests.test_cpu_nodes import mixed
    from tests.test_guest_scripts import SECRETS

    raw = mixed(True)
    cfg, _ = parse_stack_config(raw, SECRETS)
    plan = program_plan(raw)
    if loosen_dcgm:
        path = next(k for k in plan.files if k.endswith("daemonset-gpu-monitoring-dcgm-exporter.yaml"))
        not_false = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["false"]}]}]}}

        def loosen(d):
            d["spec"]["template"]["spec"].pop("nodeSelector")
            d["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": not_false}
        plan = edit(plan, path, loosen)
    return plan, cfg


CASES["mixed-cpu-control-plane"] = _mixed
CASES["mixed-gpu-daemonset-on-cpu-node"] = lambda: _mixed(loosen_dcgm=True)


def run_case(cp, name: str):
    plan, cfg = CASES[name]()
    case = Case(name, plan, cfg)
    real = apply_plan(cp, case)
    return case, real, table(case, real)


# --- the real messages, where an operator reads them ---------------------------------------------------


def _untolerated(cp, case, real, rows):
    job = real.placed[SMOKE_ID]
    assert not job.nodes and job.pending, job
    assert "0/1 nodes are available: 1 node(s) had untolerated taint(s)." in job.pending[0], job.pending
    assert [r.model for r in rows if r.rule == "scheduling" and r.object == SMOKE_ID][0].startswith(
        "cannot be placed: does not tolerate nvidia.com/gpu=true:NoSchedule")


def _insufficient(cp, case, real, rows):
    job = real.placed[SMOKE_ID]
    assert not job.nodes and "1 Insufficient nvidia.com/gpu" in job.pending[0], job


def _quota_exceeded(cp, case, real, rows):
    assert real.quotas[("ResourceQuota ml-dev/gpu-quota", "requests.nvidia.com/gpu")] == "counted"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one-too-many", "namespace": "ml-dev"},
           "spec": {"containers": [{"name": "c", "image": "registry.invalid/probe", "resources": {"limits": {"nvidia.com/gpu": "3"}}}]}}
    done = cp.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
    assert done.returncode != 0
    assert re.search(r"exceeded quota: gpu-quota, requested: requests\.nvidia\.com/gpu=3, used: requests\.nvidia\.com/gpu=\d, "
                     r"limited: requests\.nvidia\.com/gpu=2", done.stderr), done.stderr


def _uncounted(key):
    def check(cp, case, real, rows):
        verdict = real.quotas[("ResourceQuota ml-dev/gpu-quota", key)]
        assert verdict.startswith("not counted: 3 pods"), verdict
        assert [r.model for r in rows if r.rule == "quotas"][0].startswith(f"quota key '{key}'")
    return check


def _no_runtimeclass(cp, case, real, rows):
    job = real.placed[SMOKE_ID]
    assert job.refused and 'pod rejected: RuntimeClass "nvidia" not found' in job.refused[0], job


def _no_namespace(cp, case, real, rows):
    job = real.applied[SMOKE_ID]
    assert not job.accepted and 'namespaces "gpu-stack-smoke" not found' in job.message, job


def _no_crd(cp, case, real, rows):
    w = real.applied["Widget default/w"]
    assert not w.accepted and 'no matches for kind "Widget" in version "example.com/v1"' in w.message, w


REAL_MESSAGES = {
    "dev-job-without-gpu-toleration": _untolerated,
    "prod-job-wants-9-gpus": _insufficient,
    "prod-no-device-plugin": _insufficient,
    "dev-quota-requests.nvidia.com/gpu": _quota_exceeded,
    "dev-quota-limits.nvidia.com/gpu": _uncounted("limits.nvidia.com/gpu"),
    "dev-quota-nvidia.com/gpu": _uncounted("nvidia.com/gpu"),
    "dev-no-runtimeclass": _no_runtimeclass,
    "dev-namespaces-missing": _no_namespace,
    "dev-cr-without-crd": _no_crd,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_agrees_with_the_real_control_plane(control_plane, name):
    case, real, rows = run_case(control_plane, name)
    print(f"\n{name}: model against the real control plane\n{format_table(rows)}")
    assert rows, f"{name}: neither side judged anything"
    assert all(r.agree for r in rows), format_table([r for r in rows if not r.agree])
    assert not placement_mismatches(case, real), placement_mismatches(case, real)
    if name in REAL_MESSAGES:
        REAL_MESSAGES[name](control_plane, case, real, rows)


def test_a_servicemonitor_that_breaks_its_crd_schema_is_refused(control_plane):
    """The model trusts a CR whose CRD is installed; the real API server validates it against the CRD's schema
    (prometheus-operator v0.93.1's, tests/reference/crd-servicemonitors.yaml), field by field."""
    path = "manifests/dcgm-objects/servicemonitor-gpu-monitoring-dcgm-exporter.yaml"
    plan = edit(golden("dev"), path, lambda d: d["spec"]["endpoints"][0].update(interval="often", scheme="ftp"))
    real = apply_plan(control_plane, Case("dev-servicemonitor-schema", plan, config("dev")))
    sm = real.applied["ServiceMonitor gpu-monitoring/dcgm-exporter"]
    assert not sm.accepted, sm
    assert 'The ServiceMonitor "dcgm-exporter" is invalid' in sm.message, sm.message
    assert 'spec.endpoints[0].interval: Invalid value: "often"' in sm.message, sm.message
    assert 'spec.endpoints[0].scheme: Unsupported value: "ftp"' in sm.message, sm.message
    others = {oid: a.message for oid, a in real.applied.items() if not a.accepted and oid != sm.id}
    assert not others, others
    # a wrong type fails earlier, in server-side apply's typed patch (what pulumi-kubernetes sends)
    wrong = yaml.safe_load(plan.files[path])
    wrong["spec"]["endpoints"][0] = {"port": 9400, "path": "/metrics"}
    done = control_plane.apply(wrong)
    assert done.returncode != 0 and ".spec.endpoints[0].port: expected string" in done.stderr, done.stderr
