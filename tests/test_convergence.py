"""The whole-plan convergence check (convergence/analysis.py): every stack, every rule, and the field failures.

Negative tests start from a golden plan (tests/golden/<stack>/) and change
one thing, as the field failure did; a few run the real program on a changed
config under mocks.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from convergence import analysis as cv
from convergence.analysis import Plan, Violation, check, selector_matches, tolerates, untolerated
from config.models import StackConfig
from tests.conftest import ROOT, require_reference, run_stack, stack_file
from tools import plan as plan_tool

GOLDEN = ROOT / "tests" / "golden"
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
RULES = [name for name, _ in cv.RULES]


def config(stack: str) -> StackConfig:
    values, secret_keys = plan_tool.plan_config(plan_tool.load_stack_file(stack))
    return plan_tool.stack_config(values, secret_keys)


# Stacks whose kubeadm init creates the cluster: those must bring their own pod network and storage.
INIT_STACKS = [s for s in STACKS if config(s).kubernetes is not None and config(s).kubernetes.mode == "init"]


def golden(stack: str) -> Plan:
    return Plan.from_dir(GOLDEN / stack)


def with_cfg(cfg: StackConfig, **changes) -> StackConfig:
    """A copy with dotted paths replaced, e.g. {"addons.images.registry": "harbor.lab"}; re-validated."""
    data = cfg.model_dump(by_alias=True)
    for path, value in changes.items():
        parts = path.split(".")
        d = data
        for p in parts[:-1]:
            d = d[p]
        d[parts[-1]] = value
    return StackConfig.model_validate(data)


def edit(plan: Plan, path: str, fn) -> Plan:
    """Change one YAML artifact (fn mutates the parsed document)."""
    doc = yaml.safe_load(plan.files[path])
    fn(doc)
    return Plan(plan.resources, {**plan.files, path: yaml.safe_dump(doc)})


def edit_text(plan: Plan, path: str, old: str, new: str) -> Plan:
    assert old in plan.files[path], (path, old)
    return Plan(plan.resources, {**plan.files, path: plan.files[path].replace(old, new)})


def add_objects(plan: Plan, group: str, *objs: dict) -> Plan:
    files = dict(plan.files)
    for o in objs:
        meta = o["metadata"]
        name = "-".join(p for p in (o["kind"].lower(), meta.get("namespace"), meta["name"]) if p)
        files[f"manifests/{group}/{name}.yaml"] = yaml.safe_dump(o)
    return Plan(plan.resources, files)


def add_release(plan: Plan, name: str, chart: str, namespace: str, values: dict, depends_on: tuple[str, ...] = ()) -> Plan:
    row = {"type": cv.RELEASE_TYPE, "name": f"{name}-release", "parent": None, "provider": "kubernetes", "options": {"dependsOn": list(depends_on)},
           "inputs": {"name": name, "chart": chart, "namespace": namespace, "values": values, "createNamespace": True}}
    return Plan((*plan.resources, row), {**plan.files, f"helm/{name}.values.yaml": yaml.safe_dump(values)})


def remove(plan: Plan, prefix: str) -> Plan:
    return Plan(tuple(r for r in plan.resources if not r["name"].startswith(prefix)),
                {k: v for k, v in plan.files.items() if not k.startswith(prefix)})


def rules_of(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def named(violations: list[Violation], rule: str, obj: str) -> list[Violation]:
    return [v for v in violations if v.rule == rule and v.object == obj]


DEFAULT_CLASS = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                 "metadata": {"name": "local-path", "annotations": {cv.DEFAULT_CLASS_ANNOTATION: "true"}},
                 "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}
TIGERA = ("tigera-operator", "tigera-operator", "tigera-operator", {"installation": {"calicoNetwork": {"ipPools": [{"cidr": "10.244.0.0/16"}]}}})


def converged(plan: Plan) -> Plan:
    """What branch converge adds, in plan form: a CNI release, a default StorageClass, requests-only quotas,
    control-plane scrapes off."""
    plan = add_release(plan, *TIGERA, depends_on=("pod-network-crds",))  # after the Calico CRDs, as PodNetwork's release
    plan = add_objects(plan, "storage-objects", DEFAULT_CLASS)
    plan = edit(plan, "helm/kube-prometheus-stack.values.yaml",
                lambda d: d.update({k: {"enabled": False} for k in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")}))
    for path in [p for p in plan.files if "/resourcequota-" in p]:
        plan = edit(plan, path, lambda d: d["spec"]["hard"].pop("limits.nvidia.com/gpu", None))
    return plan


def strip_cni_and_storage(plan: Plan) -> Plan:
    """This issue's field failure, whatever the plan holds: no CNI release, no StorageClass, Prometheus's claim as on main."""
    drop = {r["inputs"]["name"] for r in plan.resources if r["type"] == cv.RELEASE_TYPE and r["inputs"].get("chart") in cv.CNI_CHARTS}
    files = {k: v for k, v in plan.files.items()
             if not (k.startswith("helm/") and k[len("helm/"):-len(".values.yaml")] in drop)
             and not (k.startswith("manifests/") and (yaml.safe_load(v) or {}).get("kind") == "StorageClass")}
    plan = Plan(tuple(r for r in plan.resources if (r.get("inputs") or {}).get("name") not in drop or r["type"] != cv.RELEASE_TYPE), files)
    return edit(plan, "helm/kube-prometheus-stack.values.yaml", lambda d: d["prometheus"]["prometheusSpec"]["storageSpec"]
                ["volumeClaimTemplate"]["spec"].pop("storageClassName", None))


def program_plan(raw: dict) -> Plan:
    """Run the real program on a config dict under mocks and return its plan as tools/plan.py writes it: the program's
    artifacts and the burn-in Jobs' manifests (manifests/burn-in/, plan_tool.burnin_files), which rule_burn_in reads."""
    result = run_stack(raw)
    return Plan(tuple(json.loads(plan_tool.resources_json(result))),
                {**plan_tool.artifacts(result), **plan_tool.burnin_files(StackConfig.model_validate(raw))})


# --- every stack ----------------------------------------------------------------


@pytest.mark.parametrize("stack,rule", [pytest.param(s, r, id=f"{s}-{r}") for s in STACKS for r in RULES])
def test_stack_plan_passes_rule(stack, rule):
    violations = check(golden(stack), config(stack), rules=[rule])
    assert not violations, "\n".join(map(str, violations))


@pytest.mark.parametrize("stack", STACKS)
def test_stack_converges(stack):
    violations = check(golden(stack), config(stack))
    assert not violations, "\n".join(map(str, violations))


@pytest.mark.parametrize("stack", INIT_STACKS)
def test_stack_with_what_converge_adds_passes(stack):
    """Positive: the golden plan plus a CNI release, a default StorageClass and requests-only quotas converges."""
    violations = check(converged(golden(stack)), config(stack))
    assert violations == [], "\n".join(map(str, violations))


@pytest.mark.parametrize("stack", INIT_STACKS)
def test_missing_cni_and_unbound_claim_are_named(stack):
    """This issue's field failure: no pod network, and Prometheus's claim with no class on a cluster with no default class."""
    got = check(strip_cni_and_storage(golden(stack)), config(stack))
    assert [v.key for v in named(got, "networking", "cluster (kubeadm init)")] == [cv.POD_NETWORK_KEY]
    claim = named(got, "storage", "helm release kube-prometheus-stack prometheus.prometheusSpec.storageSpec")
    assert [v.key for v in claim] == [cv.STORAGE_KEY] and "no default StorageClass" in claim[0].message
    assert rules_of(got) <= {"networking", "storage", "quotas", "targets"}


# --- networking and storage: this field failures ------------------------------------


def test_removing_the_cni_fails_naming_the_cluster_and_key():
    plan = converged(golden("dev"))
    assert not check(plan, config("dev"), rules=["networking"])
    got = check(strip_cni_and_storage(plan), config("dev"), rules=["networking"])
    assert [(v.object, v.key) for v in got] == [("cluster (kubeadm init)", "addons.podNetwork")]
    assert "NotReady" in got[0].message


def test_cni_as_manifest_daemonset_counts_and_mode_join_needs_none():
    plan = golden("dev")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-flannel-ds", "namespace": "kube-flannel"},
          "spec": {"template": {"metadata": {"labels": {"app": "flannel"}}, "spec": {"tolerations": [{"operator": "Exists"}], "containers": []}}}}
    assert not check(add_objects(plan, "cni", ds), config("dev"), rules=["networking"])
    join = with_cfg(config("dev"), **{"kubernetes.mode": "existing"})
    assert not check(plan, join, rules=["networking"])


def test_calico_pool_outside_the_pod_cidr_fails():
    plan = add_release(golden("dev"), "tigera-operator", "tigera-operator", "tigera-operator",
                       {"installation": {"calicoNetwork": {"ipPools": [{"cidr": "192.168.0.0/16"}]}}})
    got = check(plan, config("dev"), rules=["networking"])
    assert [(v.object, v.key) for v in got] == [("helm release tigera-operator", "kubernetes.podCidr")]


def test_removing_the_storage_class_fails_naming_the_claim():
    plan = converged(golden("prod"))
    assert not check(plan, config("prod"), rules=["storage"])
    files = {k: v for k, v in plan.files.items() if not (k.startswith("manifests/") and yaml.safe_load(v).get("kind") == "StorageClass")}
    got = check(Plan(plan.resources, files), config("prod"), rules=["storage"])
    assert [v.object for v in got] == ["helm release kube-prometheus-stack prometheus.prometheusSpec.storageSpec"]
    assert got[0].key == "addons.monitoring.storageClass"


def test_named_class_must_exist_or_be_declared():
    plan = edit(golden("dev"), "helm/kube-prometheus-stack.values.yaml",
                lambda d: d["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"].update(storageClassName="fast-nvme"))
    got = check(plan, config("dev"), rules=["storage"])
    assert len(got) == 1 and "'fast-nvme' is neither in the plan nor declared" in got[0].message
    # an existing cluster's class, declared in config
    existing = with_cfg(config("dev"), **{"kubernetes.mode": "existing", "addons.monitoring.storageClass": "fast-nvme"})
    assert not check(plan, existing, rules=["storage"])
    # a local-path-provisioner release creating that class
    lp = add_release(plan, "local-path", "local-path-provisioner", "local-path-storage", {"storageClass": {"name": "fast-nvme"}})
    assert not check(lp, config("dev"), rules=["storage"])


def test_statefulset_claim_templates_are_checked():
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "ml-dev"},
           "spec": {"template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": []}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"storageClassName": "gone"}}]}}
    got = check(add_objects(converged(golden("dev")), "db", sts), config("dev"), rules=["storage"])
    assert [v.object for v in got] == ["StatefulSet ml-dev/db volumeClaimTemplate data"]


# --- scraping: seed 000 -----------------------------------------------------------------------


def test_seed000_operator_servicemonitor_without_release_label():
    """Seed 000: the GPU Operator's nvidia-dcgm-exporter ServiceMonitor lacked `release: kube-prometheus-stack`."""
    plan = edit(golden("prod"), "helm/gpu-operator.values.yaml",
                lambda d: d["dcgmExporter"]["serviceMonitor"].pop("additionalLabels"))
    got = check(plan, config("prod"), rules=["scraping"])
    assert [(v.object, v.key) for v in got] == [("ServiceMonitor gpu-operator/nvidia-dcgm-exporter", "addons.monitoring.releaseName")]
    assert "release=kube-prometheus-stack" in got[0].message


def test_seed000_mislabelled_standalone_servicemonitor_and_rule():
    path_sm = "manifests/dcgm-objects/servicemonitor-gpu-monitoring-dcgm-exporter.yaml"
    path_rule = "manifests/dcgm-objects/prometheusrule-monitoring-gpu-stack-gpu-alerts.yaml"
    plan = edit(golden("dev"), path_sm, lambda d: d["metadata"]["labels"].update(release="prometheus"))
    plan = edit(plan, path_rule, lambda d: d["metadata"]["labels"].pop("release"))
    got = check(plan, config("dev"), rules=["scraping"])
    assert {v.object for v in got} == {"ServiceMonitor gpu-monitoring/dcgm-exporter", "PrometheusRule monitoring/gpu-stack-gpu-alerts"}
    assert {v.key for v in got} == {"addons.monitoring.releaseName"}


def test_release_label_not_needed_when_selector_nil_uses_helm_values_is_false():
    plan = edit(golden("prod"), "helm/gpu-operator.values.yaml", lambda d: d["dcgmExporter"]["serviceMonitor"].pop("additionalLabels"))
    plan = edit(plan, "helm/kube-prometheus-stack.values.yaml",
                lambda d: d["prometheus"]["prometheusSpec"].update(serviceMonitorSelectorNilUsesHelmValues=False))
    assert not check(plan, config("prod"), rules=["scraping"])


def test_explicit_selector_and_namespace_selector():
    plan = edit(golden("prod"), "helm/kube-prometheus-stack.values.yaml", lambda d: d["prometheus"]["prometheusSpec"].update(
        serviceMonitorSelector={"matchLabels": {"team": "gpu"}},
        serviceMonitorNamespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}))
    got = check(plan, config("prod"), rules=["scraping"])
    assert [v.key for v in got if v.object == "ServiceMonitor gpu-operator/nvidia-dcgm-exporter"] == [
        "addons.monitoring.serviceMonitorSelectorNilUsesHelmValues"] * 2
    assert any("needs labels team=gpu" in v.message for v in got)
    assert any("namespace gpu-operator is outside" in v.message for v in got)


def test_servicemonitor_port_and_service_selector_must_match():
    path_sm = "manifests/dcgm-objects/servicemonitor-gpu-monitoring-dcgm-exporter.yaml"
    path_svc = "manifests/dcgm-objects/service-gpu-monitoring-dcgm-exporter.yaml"
    bad_port = edit(golden("dev"), path_sm, lambda d: d["spec"]["endpoints"][0].update(port="gpu-metrics"))
    got = check(bad_port, config("dev"), rules=["scraping"])
    assert len(got) == 1 and "port 'gpu-metrics' is not a port name of Service gpu-monitoring/dcgm-exporter" in got[0].message
    no_pods = edit(golden("dev"), path_svc, lambda d: d["spec"].update(selector={"app": "dcgm"}))
    got = check(no_pods, config("dev"), rules=["scraping"])
    assert [v.object for v in got] == ["Service gpu-monitoring/dcgm-exporter"] and "matches no pods" in got[0].message
    no_svc = edit(golden("dev"), path_sm, lambda d: d["spec"].update(selector={"matchLabels": {"app": "nope"}}))
    assert "matches no Service" in check(no_svc, config("dev"), rules=["scraping"])[0].message


def test_operator_servicemonitor_off_and_no_prometheus():
    off = edit(golden("prod"), "helm/gpu-operator.values.yaml", lambda d: d["dcgmExporter"]["serviceMonitor"].update(enabled=False))
    assert not any(v.object.startswith("ServiceMonitor") for v in check(off, config("prod"), rules=["scraping"]))
    no_kps = remove(golden("prod"), "helm/kube-prometheus-stack")
    no_kps = Plan(tuple(r for r in no_kps.resources if r["name"] != "monitoring-release"), no_kps.files)
    got = check(no_kps, config("prod"), rules=["scraping"])
    assert {v.key for v in got} == {"addons.monitoring.enabled"} and len(got) == 2


def test_podmonitor_needs_pods_with_the_port():
    pm = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
          "metadata": {"name": "dcgm", "namespace": "gpu-monitoring", "labels": {"release": "kube-prometheus-stack"}},
          "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}}, "podMetricsEndpoints": [{"port": "metrics"}]}}
    assert not check(add_objects(golden("dev"), "pm", pm), config("dev"), rules=["scraping"])
    pm["spec"]["podMetricsEndpoints"] = [{"port": "http"}]
    got = check(add_objects(golden("dev"), "pm", pm), config("dev"), rules=["scraping"])
    assert [v.object for v in got] == ["PodMonitor gpu-monitoring/dcgm"]


def test_control_plane_scrapes_kubeadm_binds_to_localhost():
    """This issue: kube-prometheus-stack scrapes kube-controller-manager, kube-scheduler, etcd and kube-proxy, which kubeadm binds to 127.0.0.1."""
    plan = converged(golden("dev"))
    assert not check(plan, config("dev"), rules=["targets"])
    on = edit(plan, "helm/kube-prometheus-stack.values.yaml", lambda d: d["kubeProxy"].update(enabled=True))
    got = check(on, config("dev"), rules=["targets"])
    assert [(v.object, v.key) for v in got] == [("helm release kube-prometheus-stack kubeProxy", "addons.monitoring")]
    assert "KubeProxyDown fires forever" in got[0].message
    joined = with_cfg(config("dev"), **{"kubernetes.mode": "existing"})
    assert not check(on, joined, rules=["targets"])  # someone else's control plane


# --- scheduling: seed 003 -------------------------------------------------------------------------


KUBE_DEV = "guest/gpu-dev-0-guest-kubernetes.sh"


def tainted_dev() -> Plan:
    """dev with the default GPU taint on its single node (what the stack file's comment warns about)."""
    return edit_text(golden("dev"), KUBE_DEV, "export GS_NODE_TAINTS=''", "export GS_NODE_TAINTS=nvidia.com/gpu=true:NoSchedule")


def test_seed003_missing_toleration():
    """Seed 003's test pod: no toleration for the GPU taint, so it stays Pending."""
    plan = edit(tainted_dev(), "manifests/gpu-smoke-test-objects/job-gpu-stack-smoke-gpu-smoke-test.yaml",
                lambda d: d["spec"]["template"]["spec"].pop("tolerations"))
    got = named(check(plan, config("dev"), rules=["scheduling"]), "scheduling", "Job gpu-stack-smoke/gpu-smoke-test")
    assert [v.key for v in got] == ["kubernetes.nodeTaints"]
    assert "does not tolerate nvidia.com/gpu=true:NoSchedule on node gpu-dev-0" in got[0].message


def test_gpu_taint_on_the_only_node_leaves_prometheus_pending():
    got = check(tainted_dev(), config("dev"), rules=["scheduling"])
    blocked = {v.object for v in got}
    assert "StatefulSet monitoring/prometheus" in blocked and "Deployment monitoring/grafana" in blocked
    # the GPU add-ons tolerate it; node-exporter tolerates every NoSchedule taint
    assert not blocked & {"DaemonSet nvidia-device-plugin/nvidia-device-plugin", "DaemonSet gpu-monitoring/dcgm-exporter",
                          "Job gpu-stack-smoke/gpu-smoke-test", "DaemonSet monitoring/prometheus-node-exporter"}


def test_removing_a_toleration_from_chart_values_fails_naming_the_workload():
    plan = edit(tainted_dev(), "helm/nvidia-device-plugin.values.yaml", lambda d: d.update(tolerations=[]))
    got = named(check(plan, config("dev"), rules=["scheduling"]), "scheduling", "DaemonSet nvidia-device-plugin/nvidia-device-plugin")
    assert [v.key for v in got] == ["kubernetes.nodeTaints"]


def test_seed003_missing_node_label():
    """Seed 003's DaemonSet selects nvidia.com/gpu.present=true; a node without the label runs no plugin."""
    plan = edit_text(golden("dev"), KUBE_DEV, "export GS_NODE_LABELS=nvidia.com/gpu.present=true", "export GS_NODE_LABELS=''")
    got = check(plan, config("dev"), rules=["scheduling"])
    objs = {v.object: v for v in got}
    for name in ("DaemonSet nvidia-device-plugin/nvidia-device-plugin", "DaemonSet gpu-monitoring/dcgm-exporter", "Job gpu-stack-smoke/gpu-smoke-test"):
        assert objs[name].key == "kubernetes.nodeLabels" and "nvidia.com/gpu.present=true" in objs[name].message
    assert "StatefulSet monitoring/prometheus" not in objs


def test_node_labels_from_config_reach_the_check_end_to_end():
    raw = stack_file("dev")
    raw["kubernetes"]["nodeLabels"] = {}
    got = check(program_plan(raw), StackConfig.model_validate(raw), rules=["scheduling"])
    assert {v.key for v in got} == {"kubernetes.nodeLabels"}
    assert {"DaemonSet nvidia-device-plugin/nvidia-device-plugin", "Job gpu-stack-smoke/gpu-smoke-test"} <= {v.object for v in got}


def test_kubeadm_coredns_needs_an_untainted_node():
    blocked = {v.object for v in check(tainted_dev(), config("dev"), rules=["scheduling"])}
    assert "Deployment kube-system/coredns" in blocked and "DaemonSet kube-system/kube-proxy" not in blocked


def test_operator_labels_are_assumed_but_a_gpu_taint_blocks_the_operator():
    """With the GPU Operator, NFD and the operator label GPU nodes; the operator Deployment only tolerates the control-plane taint."""
    plan = edit_text(golden("prod"), "guest/ubuntu-gpu-guest-kubernetes.sh",
                     "export GS_NODE_TAINTS=''", "export GS_NODE_TAINTS=nvidia.com/gpu=true:NoSchedule")
    blocked = {v.object for v in check(plan, config("prod"), rules=["scheduling"])}
    assert "Deployment gpu-operator/gpu-operator" in blocked and "Deployment gpu-operator/node-feature-discovery-master" in blocked
    assert not any("nvidia-dcgm-exporter" in b or "node-feature-discovery-worker" in b for b in blocked)


def test_control_plane_taint_counts_when_the_script_keeps_it():
    plan = edit_text(golden("dev"), KUBE_DEV, '"${role_taint}:NoSchedule-"', '"${role_taint}:NoSchedule"')
    got = check(plan, config("dev"), rules=["scheduling"])
    v = named(got, "scheduling", "StatefulSet monitoring/prometheus")[0]
    assert v.key == "kubernetes" and "node-role.kubernetes.io/control-plane:NoSchedule" in v.message


def test_gpu_request_needs_a_gpu_node():
    plan = golden("dev")
    cfg = config("dev").model_dump(by_alias=True)
    cfg["vms"][0]["gpus"] = []
    got = check(plan, StackConfig.model_validate(cfg), rules=["scheduling"])
    # the plan's burn-in Job (issue 27) asks for the node's GPU as well
    assert [(v.object, v.key) for v in got] == [("Job gpu-stack-burnin/burnin-gpu-dev-0-dcgm", "vms"), ("Job gpu-stack-smoke/gpu-smoke-test", "vms")]


def test_joining_nodes_known_only_at_deploy_take_the_config_labels():
    c = cv.build_cluster(golden("fleet"), config("fleet"))
    assert [n.name for n in c.nodes] == ["cp-1", "gpu-1-0", "gpu-1-1", "gpu-2-0", "gpu-2-1"]
    cp, gpu_nodes = c.nodes[0], c.nodes[1:]
    assert all(n.kubelet_labels == {"nvidia.com/gpu.present": "true"} and n.gpus == 4 for n in gpu_nodes)
    assert cp.kubelet_labels == {} and cp.gpus == 0  # the CPU-only control plane (issue 26 item 2)
    assert "node-role.kubernetes.io/control-plane" in cp.labels and not any("node-role.kubernetes.io/control-plane" in n.labels for n in gpu_nodes)


def test_kubelet_refuses_restricted_node_labels():
    plan = edit_text(golden("dev"), KUBE_DEV, "export GS_NODE_LABELS=nvidia.com/gpu.present=true",
                     "export GS_NODE_LABELS='node-role.kubernetes.io/gpu=true node.kubernetes.io/gpu=true nvidia.com/gpu.present=true'")
    got = named(check(plan, config("dev"), rules=["scheduling"]), "scheduling", "Node gpu-dev-0")
    assert [v.key for v in got] == ["kubernetes.nodeLabels"] and "node-role.kubernetes.io/gpu" in got[0].message


def test_gpu_requests_need_a_plugin_that_advertises_them():
    """Seed 003 step 1: no nvidia.com/gpu in allocatable when no device plugin runs (or it renames the resource)."""
    off = edit(golden("prod"), "helm/gpu-operator.values.yaml", lambda d: d["devicePlugin"].update(enabled=False))
    got = named(check(off, config("prod"), rules=["scheduling"]), "scheduling", "Job gpu-stack-smoke/gpu-smoke-test")
    assert [v.key for v in got] == ["addons.devicePlugin.enabled"]
    renamed = edit(golden("dev"), "helm/nvidia-device-plugin.values.yaml", lambda d: d["config"]["map"].update(
        default=d["config"]["map"]["default"].replace("renameByDefault: false", "renameByDefault: true")))
    got = named(check(renamed, config("dev"), rules=["scheduling"]), "scheduling", "Job gpu-stack-smoke/gpu-smoke-test")
    assert len(got) == 1 and "advertised: nvidia.com/gpu.shared" in got[0].message
    greedy = edit(golden("prod"), "manifests/gpu-smoke-test-objects/job-gpu-stack-smoke-gpu-smoke-test.yaml",
                  lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update({"nvidia.com/gpu": "9"}))
    got = named(check(greedy, config("prod"), rules=["scheduling"]), "scheduling", "Job gpu-stack-smoke/gpu-smoke-test")
    assert len(got) == 1 and "the largest node offers 8" in got[0].message


# --- toleration and affinity semantics ----------------------------------------------------------


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}


@pytest.mark.parametrize("toleration,expected", [
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
    ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),  # empty effect matches every effect
    ({"operator": "Exists"}, True),  # empty key with Exists tolerates everything
    ({"operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}, True),
    ({"key": "nvidia.com/gpu", "value": "true"}, True),  # operator defaults to Equal
    ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "false"}, False),
    ({"key": "nvidia.com/gpu", "operator": "Equal", "effect": "NoSchedule"}, False),  # value "" != "true"
    ({"key": "CriticalAddonsOnly", "operator": "Exists"}, False),
    ({"operator": "Equal", "value": "true"}, False),  # empty key needs Exists
])
def test_toleration_semantics(toleration, expected):
    assert tolerates(toleration, GPU_TAINT) is expected


def test_prefer_no_schedule_never_blocks():
    assert untolerated([], [{"key": "a", "value": "", "effect": "PreferNoSchedule"}]) == []
    assert untolerated([], [GPU_TAINT]) == [GPU_TAINT]


def test_affinity_terms_are_ored_and_expressions_anded():
    node = cv.Node("n", {"a": "1", "b": "x"}, [], 1, None)
    term = lambda *e: {"matchExpressions": list(e)}  # noqa: E731
    spec = lambda *terms: {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}}  # noqa: E731
    assert cv.labels_fit(spec(term({"key": "a", "operator": "In", "values": ["2"]}), term({"key": "b", "operator": "Exists"})), node) == []
    assert cv.labels_fit(spec(term({"key": "a", "operator": "In", "values": ["1"]}, {"key": "c", "operator": "Exists"})), node) != []
    assert cv.labels_fit(spec(term({"key": "c", "operator": "DoesNotExist"}, {"key": "a", "operator": "Gt", "values": ["0"]})), node) == []
    assert cv.labels_fit(spec({}), node) != []  # an empty term matches no node
    assert cv.labels_fit({"nodeSelector": {"a": "1"}}, node) == [] and cv.labels_fit({"nodeSelector": {"a": "2"}}, node) != []


def test_label_selector_semantics():
    assert selector_matches({}, {"x": "1"}) and selector_matches(None, {})
    assert selector_matches({"matchLabels": {"release": "kps"}}, {"release": "kps", "app": "a"})
    assert not selector_matches({"matchLabels": {"release": "kps"}}, {"app": "a"})
    assert selector_matches({"matchExpressions": [{"key": "release", "operator": "NotIn", "values": ["x"]}]}, {})


# --- dashboards, runtime, quotas, images -------------------------------------------------------


DASHBOARD = "manifests/dcgm-objects/configmap-monitoring-gpu-stack-dashboard.yaml"


def test_dashboard_without_sidecar_label_fails():
    plan = edit(golden("prod"), DASHBOARD, lambda d: d["metadata"].pop("labels"))
    got = check(plan, config("prod"), rules=["dashboards"])
    assert [v.object for v in got] == ["ConfigMap monitoring/gpu-stack-dashboard"] and "grafana_dashboard=1" in got[0].message
    wrong_value = edit(golden("prod"), DASHBOARD, lambda d: d["metadata"]["labels"].update(grafana_dashboard="true"))
    assert len(check(wrong_value, config("prod"), rules=["dashboards"])) == 1


def test_dashboard_follows_a_changed_sidecar_label():
    plan = edit(golden("dev"), "helm/kube-prometheus-stack.values.yaml",
                lambda d: d["grafana"]["sidecar"]["dashboards"].update(label="dashboards"))
    assert len(check(plan, config("dev"), rules=["dashboards"])) == 1


RUNTIME_DEV = "guest/gpu-dev-0-guest-nvidia-runtime-container-runtime.sh"


def test_runtime_class_handler_missing_from_the_runtime_config():
    """Seed 003 step 4: containerd without the nvidia runtime; seed 001: docker, where the CRI shim serves only `docker`."""
    plan = edit_text(golden("dev"), RUNTIME_DEV, "nvidia-ctk runtime configure --runtime=containerd", "true --runtime=containerd")
    got = check(plan, config("dev"), rules=["runtime"])
    assert [(v.object, v.key) for v in got] == [("RuntimeClass nvidia", "guest.containerRuntime.name")]
    docker = edit_text(golden("prod"), "guest/ubuntu-gpu-guest-nvidia-runtime-container-runtime.sh",
                       "export GS_RUNTIME=containerd", "export GS_RUNTIME=docker")
    got = check(docker, config("prod"), rules=["runtime"])
    assert [v.object for v in got] == ["RuntimeClass nvidia"] and "(its runtime has docker)" in got[0].message


def test_runtime_class_name_must_exist():
    plan = remove(golden("dev"), "manifests/nvidia-runtime-class-objects")
    got = check(plan, config("dev"), rules=["runtime"])
    assert {v.object for v in got} == {"DaemonSet gpu-monitoring/dcgm-exporter", "Job gpu-stack-smoke/gpu-smoke-test",
                                       "DaemonSet nvidia-device-plugin/nvidia-device-plugin", "Job gpu-stack-burnin/burnin-gpu-dev-0-dcgm"}
    assert {v.key for v in got} == {"guest.containerRuntime.nvidiaDefault"}


def test_where_a_pod_naming_a_runtime_class_can_land():
    """RuntimeClass admission merges the class's scheduling into the pod (nodeSelector; a conflicting key refuses the
    pod; tolerations appended), then the scheduler's label, taint and GPU-request filters decide."""
    gpu = cv.Node("g", {"nvidia.com/gpu.present": "true"}, [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}], 1, {"runc", "nvidia"})
    cpu = cv.Node("c", {}, [], 0, {"runc"})
    rc = {"handler": "nvidia", "scheduling": {"nodeSelector": {"nvidia.com/gpu.present": "true"},
                                              "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}
    bare = {"handler": "nvidia"}

    def pod(**spec):
        return cv.Workload("Pod default/x", "default", {}, {"runtimeClassName": "nvidia", "containers": [{"name": "x"}], **spec}, "manifest")

    def lands(w, c):
        return [n.name for n in cv.runtime_class_nodes(w, c, [gpu, cpu])]

    assert lands(pod(), rc) == ["g"]  # the class's selector keeps it off c, its toleration lets it onto g
    assert lands(pod(), bare) == ["c"]  # no scheduling: g's taint keeps it off, c takes it
    assert lands(pod(nodeSelector={"nvidia.com/gpu.present": "false"}), rc) == []  # refused at admission
    tolerant = [{"operator": "Exists"}]
    assert lands(pod(tolerations=tolerant), bare) == ["g", "c"]
    asks = pod(tolerations=tolerant, containers=[{"name": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}])
    assert lands(asks, bare) == ["g"]  # c advertises no nvidia.com/gpu
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "Exists"}]}]}}}
    assert lands(pod(tolerations=tolerant, affinity=affinity), bare) == ["g"]


QUOTA = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu-quota", "namespace": "ml-dev"}, "spec": {"hard": {}}}


@pytest.mark.parametrize("key,ok", [
    ("requests.nvidia.com/gpu", True), ("limits.nvidia.com/gpu", False), ("nvidia.com/gpu", False),
    ("requests.cpu", True), ("limits.memory", True), ("cpu", True), ("pods", True), ("count/jobs.batch", True),
    ("requests.storage", True), ("gold.storageclass.storage.k8s.io/requests.storage", True), ("limits.hugepages-1Gi", True),
])
def test_quota_keys(key, ok):
    """This issue: `limits.nvidia.com/gpu` in seed 004's quota is never counted."""
    quota = copy.deepcopy(QUOTA)
    quota["spec"]["hard"] = {key: "4"}
    plan = remove(golden("dev"), "manifests/gpu-quotas-ml-dev")
    got = check(add_objects(plan, "gpu-quotas-ml-dev", quota), config("dev"), rules=["quotas"])
    assert (got == []) is ok
    if not ok:
        assert got[0].object == "ResourceQuota ml-dev/gpu-quota" and got[0].key == "addons.gpuQuotas[0]"


def test_images_from_the_configured_registry():
    """Seed 001 pulled everything from a private Harbor. With a registry set, upstream images in manifests and chart values are violations; the program's own renders pass."""
    cfg = with_cfg(config("dev"), **{"addons.images.registry": "harbor.lab.local"})
    got = check(golden("dev"), cfg, rules=["images"])  # rendered without the registry: everything is upstream
    assert {"helm release kube-prometheus-stack", "helm release nvidia-device-plugin", "DaemonSet gpu-monitoring/dcgm-exporter",
            "Job gpu-stack-smoke/gpu-smoke-test"} <= {v.object for v in got}
    raw = stack_file("dev")
    raw["addons"]["images"] = {"registry": "harbor.lab.local"}
    assert check(program_plan(raw), StackConfig.model_validate(raw), rules=["images"]) == []


def test_operator_images_include_nfd():
    """The GPU Operator path with a registry: gpu-stack moves the NVIDIA images but not NFD's (registry.k8s.io)."""
    raw = stack_file("prod")
    raw["addons"]["images"] = {"registry": "harbor.lab.local"}
    got = check(program_plan(raw), StackConfig.model_validate(raw), rules=["images"])
    assert [(v.object, v.message.split(" is ")[0]) for v in got] == [("helm release gpu-operator", "node-feature-discovery.image.repository")]
    raw["addons"]["images"]["overrides"] = {"registry.k8s.io/nfd/node-feature-discovery": "harbor.lab.local/nfd/node-feature-discovery"}
    plan = edit(program_plan(raw), "helm/gpu-operator.values.yaml",
                lambda d: d.setdefault("node-feature-discovery", {}).update(image={"repository": "harbor.lab.local/nfd/node-feature-discovery"}))
    assert check(plan, StackConfig.model_validate(raw), rules=["images"]) == []


def test_unknown_objects_are_not_a_pass():
    plan = Plan(golden("dev").resources, {**golden("dev").files, "manifests/late/UNKNOWN.yaml": "# [unknown until deploy]\n"})
    assert [v.object for v in check(plan, config("dev"), rules=["plan"])] == ["ConfigGroup late"]


# --- the chart models against the pinned charts' defaults ---------------------------------------------------

CHART_REFERENCE = {
    "nvidia-device-plugin": "nvidia-device-plugin-v0.20.0.values.yaml",
    "gpu-operator": "gpu-operator-v26.7.0.values.yaml",
    "kube-prometheus-stack": "kube-prometheus-stack-88.5.3.values.yaml",
    "tigera-operator": "tigera-operator-v3.32.1.values.yaml",
}
# model paths whose defaults live in a subchart's values.yaml, not in the parent chart's
SUBCHART_DEFAULTS = {
    "gpu-operator": ("node-feature-discovery.image", "node-feature-discovery.master",
                     "node-feature-discovery.gc.nodeSelector", "node-feature-discovery.gc.tolerations", "node-feature-discovery.gc.affinity",
                     "node-feature-discovery.worker.enable", "node-feature-discovery.worker.nodeSelector",
                     "node-feature-discovery.worker.affinity"),
    "kube-prometheus-stack": ("grafana.nodeSelector", "grafana.tolerations", "grafana.affinity", "grafana.persistence",
                              "kube-state-metrics.", "prometheus-node-exporter.nodeSelector",
                              "prometheus-node-exporter.tolerations", "prometheus-node-exporter.affinity"),
    "tigera-operator": ("installation.registry",),  # commented out upstream: unset
}
_MISSING = object()


ATOMIC = ("nodeSelector", "tolerations", "affinity", "additionalLabels")  # compared whole: label keys hold dots


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ATOMIC:
            yield from _leaves(v, path + ".")
        else:
            yield path, v


@pytest.mark.parametrize("chart", sorted(CHART_REFERENCE))
def test_chart_model_defaults_are_the_pinned_charts(chart):
    """Every default the check assumes equals the pinned chart's values.yaml, or is a documented subchart default."""
    ref = yaml.safe_load(require_reference(CHART_REFERENCE[chart]).read_text())
    checked, problems = 0, []
    for path, want in _leaves(cv.CHARTS[chart].defaults):
        got = cv.get(ref, path, _MISSING)
        if any(path == s or path.startswith(s if s.endswith(".") else s + ".") or path == s.rstrip(".") for s in SUBCHART_DEFAULTS.get(chart, ())):
            if got is not _MISSING:  # the parent chart sets it after all: compare
                problems.append(f"{path}: listed as a subchart default but the chart sets {got!r}")
            continue
        checked += 1
        if got is _MISSING or got != want:
            problems.append(f"{path}: model {want!r}, chart {'(absent)' if got is _MISSING else repr(got)}")
    assert not problems and checked >= 3, problems


def test_operator_dcgm_objects_match_the_v26_7_0_assets():
    """The Service/ServiceMonitor the model creates are the ones in assets/state-dcgm-exporter/ (read at tag v26.7.0)."""
    rel = cv.build_cluster(golden("prod"), config("prod")).release("gpu-operator")
    objs = {o["kind"]: o for o in cv._operator_objects(rel, True) if o["metadata"]["name"] != "gpu-operator"}
    svc, sm = objs["Service"], objs["ServiceMonitor"]
    assert svc["metadata"]["name"] == "nvidia-dcgm-exporter" and svc["spec"]["selector"] == {"app": "nvidia-dcgm-exporter"}
    assert svc["spec"]["ports"] == [{"name": "gpu-metrics", "port": 9400, "targetPort": 9400}]
    assert sm["spec"]["endpoints"][0]["port"] == "gpu-metrics" and sm["spec"]["namespaceSelector"] == {"matchNames": ["gpu-operator"]}
    assert sm["metadata"]["labels"] == {"app": "nvidia-dcgm-exporter", "release": "kube-prometheus-stack"}
    assert objs["RuntimeClass"]["handler"] == "nvidia"


def _filled(doc: dict, ns: str) -> dict:
    """An operator asset as the operator creates it: FILLED_BY_THE_OPERATOR replaced by its namespace."""
    return yaml.safe_load(yaml.safe_dump(doc).replace("FILLED_BY_THE_OPERATOR", ns))


def test_operator_metrics_objects_match_the_v26_7_0_assets():
    """The operator's own Service and ServiceMonitor are assets/state-operator-metrics/0200 and 0300 at v26.7.0
    (the namespace filled in), plus the additionalLabels the ClusterPolicy carries."""
    rel = cv.build_cluster(golden("prod"), config("prod")).release("gpu-operator")
    objs = {o["kind"]: o for o in cv._operator_objects(rel, True) if o["metadata"]["name"] == "gpu-operator"}
    svc = _filled(yaml.safe_load(require_reference("gpu-operator-v26.7.0.state-operator-metrics.0200_service.yaml").read_text()), rel.namespace)
    sm = _filled(yaml.safe_load(require_reference("gpu-operator-v26.7.0.state-operator-metrics.0300_service_monitor.yaml").read_text()), rel.namespace)
    assert objs["Service"]["spec"] == svc["spec"] and objs["Service"]["metadata"]["labels"] == svc["metadata"]["labels"]
    assert objs["ServiceMonitor"]["spec"] == sm["spec"]
    extra = cv.get(rel.effective, "operator.metrics.serviceMonitor.additionalLabels") or {}
    assert objs["ServiceMonitor"]["metadata"]["labels"] == {**sm["metadata"]["labels"], **extra}
    assert "release" not in sm["metadata"]["labels"]  # upstream alone is not selected by kube-prometheus-stack
    assert not any(o["metadata"]["name"] == "gpu-operator" and o["kind"] == "ServiceMonitor"
                   for o in cv._operator_objects(rel, False))  # no ServiceMonitor CRD: the operator skips it


@pytest.mark.parametrize("stack", [s for s in STACKS if config(s).addons.gpu_operator.enabled and config(s).addons.monitoring.enabled])
def test_operator_metrics_monitor_without_the_release_label_is_found(stack):
    """Issue 22 item 4: the operator's own ServiceMonitor carries only app: gpu-operator unless the values add release."""
    plan = edit(golden(stack), "helm/gpu-operator.values.yaml", lambda d: d["operator"].pop("metrics", None))
    found = named(check(plan, config(stack), rules=["scraping"]), "scraping", "ServiceMonitor gpu-operator/gpu-operator")
    assert [v.key for v in found] == [cv.RELEASE_KEY], "\n".join(map(str, found))
    assert "release=kube-prometheus-stack" in found[0].message


# --- custom resources and their CRDs -------------------------------------------------------------------

CALICO_CRDS = "calico-v3.32.1.v1_crd_projectcalico_org.yaml"


def _crd_apis(name: str) -> set[str]:
    docs = [d for d in yaml.safe_load_all(require_reference(name).read_text()) if d]
    assert all(d["kind"] == "CustomResourceDefinition" for d in docs)
    return {f"{d['spec']['group']}/{d['spec']['names']['kind']}" for d in docs}


def test_calico_crd_table_is_the_real_v3_32_1_manifest():
    """CRD_SOURCES' Calico row lists exactly the 32 CRDs of manifests/v1_crd_projectcalico_org.yaml at v3.32.1, and
    every kind the tigera-operator chart renders for us (Installation, APIServer, ...) is one of them."""
    real = _crd_apis(CALICO_CRDS)
    assert len(real) == 32
    assert set(cv.CRD_SOURCES["crd.projectcalico.org.v1"].crds) == real
    assert {r.api for r in cv.CHART_RESOURCES["tigera-operator"]} <= real
    assert {"operator.tigera.io/Installation", "operator.tigera.io/APIServer"} <= real


def test_prometheus_crd_table_names_the_pinned_crds():
    for name in ("crd-servicemonitors.yaml", "crd-prometheusrules.yaml", "crd-podmonitors.yaml"):
        assert _crd_apis(name) <= set(cv.CRD_SOURCES["kube-prometheus-stack"].crds), name


@pytest.mark.parametrize("stack", INIT_STACKS)
def test_calico_crs_without_the_crd_chart_are_found(stack):
    """Issue 22 item 3: the tigera-operator chart (v3.32+) has no CRDs; its Installation and APIServer need the
    crd.projectcalico.org.v1 chart in the plan."""
    plan = golden(stack)
    crd_rows = [r for r in plan.resources if (r.get("inputs") or {}).get("chart") == "crd.projectcalico.org.v1"]
    assert crd_rows and crd_rows[0]["type"] == cv.CHART_TYPE
    assert crd_rows[0]["inputs"]["version"] == next(r["inputs"]["version"] for r in plan.resources
                                                    if (r.get("inputs") or {}).get("chart") == "tigera-operator")
    without = Plan(tuple(r for r in plan.resources if r not in crd_rows), plan.files)
    found = [v for v in check(without, config(stack), rules=["crds"])]
    assert {v.object for v in found} == {"helm release calico Installation default", "helm release calico APIServer default"}
    assert {v.key for v in found} == {cv.POD_NETWORK_KEY}


@pytest.mark.parametrize("stack", INIT_STACKS)
def test_a_release_not_waiting_for_its_crds_is_found(stack):
    plan = golden(stack)
    rows = tuple({**r, "options": {**r["options"], "dependsOn": [d for d in r["options"]["dependsOn"] if d != "pod-network-crds"]}}
                 if r["name"] == "pod-network-release" else r for r in plan.resources)
    found = check(Plan(rows, plan.files), config(stack), rules=["crds"])
    assert found and all("does not wait for" in v.message and "pod-network-release" in v.message for v in found), found


def test_a_custom_resource_needs_its_crd_in_the_plan():
    plan = golden("dev")
    cr = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"}}
    found = check(add_objects(plan, "gpu-quotas-objects", cr), config("dev"), rules=["crds"])
    assert [v.object for v in found] == ["Widget default/w"]
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced"}}
    assert check(add_objects(plan, "gpu-quotas-objects", cr, crd), config("dev"), rules=["crds"]) == []


def test_kubevirt_kinds_are_declared_present_only_on_a_kubevirt_host():
    plan = golden("kubevirt")
    assert any(cv.api_of(o) == "kubevirt.io/VirtualMachine" for o in cv.build_cluster(plan, config("kubevirt")).objects)
    assert check(plan, config("kubevirt"), rules=["crds"]) == []
    saved = dict(cv.PRESENT_CRDS)
    try:
        cv.PRESENT_CRDS.pop("kubevirt")
        found = check(plan, config("kubevirt"), rules=["crds"])
    finally:
        cv.PRESENT_CRDS.update(saved)
    assert found and all("kubevirt.io/" in v.message for v in found)


# --- make plan ---------------------------------------------------------------------------------------


def test_make_plan_fails_with_one_line_per_violation(tmp_path, capsys):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["gpu-stack:kubernetes"]["nodeLabels"] = {}
    (tmp_path / "Pulumi.nolabel.yaml").write_text(yaml.safe_dump(doc))
    rc = plan_tool.main(["nolabel", "--out", str(tmp_path / "plan"), "--stack-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = err.strip().splitlines()
    assert lines and all(x.startswith("convergence: ") and "(change gpu-stack:" in x for x in lines)
    assert any(x.startswith("convergence: DaemonSet nvidia-device-plugin/nvidia-device-plugin: cannot be placed")
               and x.endswith("(change gpu-stack:kubernetes.nodeLabels)") for x in lines)
    assert f"convergence: {len(lines)} violations ({len(cv.RULES)} rules)" in out
    assert (tmp_path / "plan" / "nolabel" / "resources.json").exists()


def test_make_plan_reports_ok(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_check(plan, cfg, rules=None):
        seen["plan"] = plan
        return []

    monkeypatch.setattr(cv, "check", fake_check)
    rc = plan_tool.main(["dev", "--out", str(tmp_path / "plan")])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    assert f"convergence: ok ({len(cv.RULES)} rules)" in out
    # the check saw exactly what was written
    written = Plan.from_dir(tmp_path / "plan" / "dev")
    assert dict(seen["plan"].files) == dict(written.files) and list(seen["plan"].resources) == list(written.resources)


def test_check_is_pure():
    assert not re.search(r"^\s*(import|from) pulumi", Path(cv.__file__).read_text(), re.M)


# --- KubeVirt (seed 002): permitted in the KubeVirt CR, advertised on the node --------


KV_VM = "vms/kv-3090/virtualmachine.yaml"


def test_kubevirt_golden_plan_permits_and_fits_what_its_vm_requests():
    plan = golden("kubevirt")
    assert "kubevirt/expected-allocatable.yaml" in plan.files and "kubevirt/kubevirt-cr-patch.yaml" in plan.files
    assert check(plan, config("kubevirt"), rules=["kubevirt"]) == []


def test_kubevirt_resource_not_permitted_by_the_cr_patch_is_named():
    plan = edit(golden("kubevirt"), "kubevirt/kubevirt-cr-patch.yaml",
                lambda d: d["spec"]["configuration"]["permittedHostDevices"].update(pciHostDevices=[]))
    [v] = check(plan, config("kubevirt"), rules=["kubevirt"])
    assert v.object == "VirtualMachine gpu-vms/kv-3090" and v.key == "hosts[0].kubevirt.devicePlugins" and "nvidia.com/RTX_3090" in v.message


def test_kubevirt_vm_asking_for_more_than_the_node_advertises_is_named():
    plan = edit(golden("kubevirt"), "kubevirt/expected-allocatable.yaml", lambda d: d["kv-gpu-node-1"].update({"nvidia.com/RTX_3090": 3}))
    [v] = check(plan, config("kubevirt"), rules=["kubevirt"])
    assert v.object == "Node kv-gpu-node-1" and v.key == "vms[0].gpus" and "request 4" in v.message and "advertise 3" in v.message


def test_kubevirt_hook_without_the_sidecar_gate_is_named():
    plan = edit(golden("kubevirt"), "kubevirt/kubevirt-cr-patch.yaml",
                lambda d: d["spec"]["configuration"]["developerConfiguration"].update(featureGates=["HostDevices"]))
    [v] = check(plan, config("kubevirt"), rules=["kubevirt"])
    assert v.key == "hosts[0].kubevirt.featureGates" and "Sidecar" in v.message


# --- namespaces (issue 22 item 5) ---------------------------------------------------------------

HOST_NS = "kubernetes:core/v1:Namespace"


def without(plan: Plan, rows=lambda r: False, files=()) -> Plan:
    return Plan(tuple(r for r in plan.resources if not rows(r)), {p: t for p, t in plan.files.items() if p not in files})


def on_host_cluster(r: dict) -> bool:
    return r["type"] == HOST_NS and r["provider"] == "kubevirt-host-cluster"


def set_host(cfg: StackConfig, hi: int, **kubevirt) -> StackConfig:
    data = cfg.model_dump(by_alias=True)
    data["hosts"][hi]["kubevirt"].update(kubevirt)
    return StackConfig.model_validate(data)


def test_the_kubevirt_plan_creates_the_namespace_its_vm_lives_in():
    """Today's kubevirt plan put the VM, its Secret, ConfigMap and Service in gpu-vms, which nothing created."""
    plan = golden("kubevirt")
    assert "kubevirt/namespace-gpu-vms.yaml" in plan.files
    assert [r["name"] for r in plan.resources if on_host_cluster(r)] == ["kubevirt-namespace-gpu-vms"]
    assert check(plan, config("kubevirt"), rules=["namespaces"]) == []


def test_host_cluster_objects_in_a_namespace_nobody_creates_are_named():
    plan = without(golden("kubevirt"), on_host_cluster, ["kubevirt/namespace-gpu-vms.yaml"])
    vs = check(plan, config("kubevirt"), rules=["namespaces"])
    assert {v.object for v in vs} == {"Secret gpu-vms/kv-3090-cloudinit", "ConfigMap gpu-vms/kv-3090-pcihole64",
                                      "VirtualMachine gpu-vms/kv-3090", "Service gpu-vms/kv-3090-ssh"}
    assert {v.key for v in vs} == {"hosts[0].kubevirt.createNamespace"} and all("kubevirt-host-cluster" in v.message for v in vs)
    # declared to exist (managed elsewhere): nothing to say
    assert check(plan, set_host(config("kubevirt"), 0, createNamespace=False), rules=["namespaces"]) == []


def test_a_namespace_on_the_guest_cluster_does_not_serve_the_host_cluster():
    rows = tuple({**r, "provider": "kubernetes"} if on_host_cluster(r) else r for r in golden("kubevirt").resources)
    vs = check(Plan(rows, golden("kubevirt").files), config("kubevirt"), rules=["namespaces"])
    assert "VirtualMachine gpu-vms/kv-3090" in {v.object for v in vs}


def test_the_kubevirt_crs_namespace_exists_with_kubevirt():
    plan = golden("kubevirt")
    assert any(r["type"].endswith(":KubeVirtPatch") and r["inputs"]["metadata"]["namespace"] == "kubevirt" for r in plan.resources)
    assert not [v for v in check(plan, config("kubevirt"), rules=["namespaces"]) if "KubeVirtPatch" in v.object]


def test_guest_cluster_objects_and_releases_in_a_namespace_nobody_creates_are_named():
    plan = without(golden("dev"), files=["manifests/gpu-smoke-test-objects/namespace-gpu-stack-smoke.yaml",
                                         "manifests/gpu-quotas-ml-dev/namespace-ml-dev.yaml"])
    plan = Plan(tuple({**r, "inputs": {**r["inputs"], "createNamespace": False}} if r["name"] == "device-plugin-release" else r
                      for r in plan.resources), plan.files)
    vs = {v.object: v for v in check(plan, config("dev"), rules=["namespaces"])}
    assert set(vs) == {"Job gpu-stack-smoke/gpu-smoke-test", "ResourceQuota ml-dev/gpu-quota", "LimitRange ml-dev/gpu-limit-range",
                       "helm release nvidia-device-plugin"}, vs
    assert vs["ResourceQuota ml-dev/gpu-quota"].key == "addons.gpuQuotas[0].createNamespace"
    quotas = config("dev").addons.gpu_quotas
    declared = with_cfg(config("dev"), **{"addons.gpuQuotas": [{**q.model_dump(by_alias=True), "createNamespace": False} for q in quotas]})
    assert not [v for v in check(plan, declared, rules=["namespaces"]) if "ml-dev" in v.object]


# --- issue 27: the burn-in Jobs ---------------------------------------------------------------------------------

BURNIN_NCCL = "manifests/burn-in/job-gpu-stack-burnin-burnin-ubuntu-gpu-nccl.yaml"


def test_burnin_jobs_hold_all_gpus_and_tolerate_the_taints_and_the_cordon():
    plan, cfg = golden("prod"), config("prod")
    assert BURNIN_NCCL in plan.files and cv.check(plan, cfg, ["burn-in"]) == []

    def partial(doc):
        spec = doc["spec"]["template"]["spec"]
        spec["tolerations"] = [t for t in spec["tolerations"] if t["key"] != "node.kubernetes.io/unschedulable"]
        spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"

    found = named(cv.check(edit(plan, BURNIN_NCCL, partial), cfg, ["burn-in"]), "burn-in", "Job gpu-stack-burnin/burnin-ubuntu-gpu-nccl")
    assert sorted(v.message for v in found) == [
        "cannot run on node ubuntu-gpu before it is uncordoned: does not tolerate node.kubernetes.io/unschedulable:NoSchedule",
        "requests 4 of node ubuntu-gpu's 8 GPUs: a burn-in must hold all of them"]
    gone = cv.check(remove(plan, "manifests/burn-in/"), cfg, ["burn-in"])
    assert [(v.object, v.key) for v in gone] == [("Node ubuntu-gpu", "burnIn.enabled")]

