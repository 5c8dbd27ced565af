"""Would this cluster converge? A whole-plan check, pure (no Pulumi).

Input: the rendered plan, exactly what tools/plan.py writes (the resources
list with type, name, parent and inputs, plus the artifacts: helm/<release>.
values.yaml, manifests/<group>/*.yaml, guest/<vm>-guest-<phase>.sh), and the
typed StackConfig. Output: a list of Violations, each naming the object
(`Kind namespace/name`, or `helm release <name>`) and the config key to change.

Every rule states in its docstring what it assumes. What the Helm charts
create is modelled from their values merged over the pinned chart defaults
(CHARTS below; each entry names the chart, version and values path it was read
from); what the GPU Operator creates from its ClusterPolicy is modelled from
gpu-operator v26.7.0's assets/state-dcgm-exporter/ and controllers/
(object_controls.go, state_manager.go).

Node model (docs/ARCHITECTURE.md, "Convergence check"):
- one node per VM that runs the kubernetes phase, named after the VM; its
  labels are kubelet's well-known ones (kubernetes.io/hostname, os, arch),
  kubeadm's control-plane role label on the init VM, GS_NODE_LABELS from that
  VM's kubernetes phase header, and, with the GPU Operator on a VM that has
  GPUs, the labels NFD and the operator add (feature.node.kubernetes.io/
  pci-10de.present, nvidia.com/gpu.present and the nvidia.com/gpu.deploy.*
  labels of the container workload config);
- its taints are GS_NODE_TAINTS, plus node-role.kubernetes.io/control-plane:
  NoSchedule on the init VM unless its script removes that taint (gpu-stack's
  kubernetes.sh does); a joining VM whose phase is only known at deploy time
  (it waits for the init VM's outputs) gets kubernetes.nodeLabels and
  kubernetes.nodeTaints, which is what its header will hold;
- mode existing: the VMs' nodes are declared to carry kubernetes.nodeLabels
  and kubernetes.nodeTaints; in modes join and existing the cluster has other
  nodes gpu-stack does not know, so only GPU workloads must fit the stack's
  nodes;
- its runtime handlers come from its container-runtime phase: containerd's
  default `runc` plus the runtime `nvidia-ctk runtime configure` adds
  (`nvidia` unless renamed; none on a VM without GPUs, whose phase has no
  GS_TOOLKIT_VERSION); docker's CRI shim serves only the handler
  `docker` (nvidia is the daemon's default runtime there).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from hypervisors.base import HYPERVISORS
from config.models import StackConfig

KEY_PREFIX = "gpu-stack:"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
CHART_TYPE = "kubernetes:helm.sh/v4:Chart"
"""pulumi-kubernetes' helm.v4.Chart: `helm template` rendered client-side, each object server-side applied."""
GROUP_TYPE = "kubernetes:yaml/v2:ConfigGroup"
UNKNOWN = "[unknown]"

# Config keys the violations point at. POD_NETWORK_KEY and STORAGE_KEY name the
# keys issue 10 items 1-2 add (branch converge); adjust here if they differ.
POD_NETWORK_KEY = "addons.podNetwork"
STORAGE_KEY = "addons.monitoring.storageClass"
LABELS_KEY = "kubernetes.nodeLabels"
TAINTS_KEY = "kubernetes.nodeTaints"
RELEASE_KEY = "addons.monitoring.releaseName"
SELECTOR_KEY = "addons.monitoring.serviceMonitorSelectorNilUsesHelmValues"
MONITORING_KEY = "addons.monitoring.enabled"
RUNTIME_KEY = "guest.containerRuntime.name"
RUNTIME_DEFAULT_KEY = "guest.containerRuntime.nvidiaDefault"
IMAGES_KEY = "addons.images.overrides"
POD_CIDR_KEY = "kubernetes.podCidr"

WORKLOAD_KINDS = ("DaemonSet", "Deployment", "Job", "StatefulSet", "ReplicaSet", "CronJob", "Pod")
CNI_CHARTS = ("tigera-operator", "calico", "flannel", "cilium")
CNI_DAEMONSETS = ("calico-node", "kube-flannel-ds", "cilium")
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "value": "", "effect": "NoSchedule"}
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"

UNKNOWN_UNTIL_DEPLOY = "[unknown until deploy"
"""What a plan writes for a phase whose script depends on other resources' outputs (tools/plan.py): a joining VM's."""


# --- plan and violations ----------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What tools/plan.py writes: resources.json rows and the artifact files (relative path -> text)."""

    resources: tuple[dict[str, Any], ...]
    files: Mapping[str, str]

    @classmethod
    def from_dir(cls, root: Path) -> "Plan":
        rows = json.loads((root / "resources.json").read_text())
        files = {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
                 if p.is_file() and p.name != "resources.json"}
        return cls(tuple(rows), files)


@dataclass(frozen=True)
class Violation:
    rule: str
    object: str
    """`Kind namespace/name`, `Kind name` (cluster-scoped) or `helm release <name>`."""
    key: str
    """The config key to change, without the gpu-stack: prefix."""
    message: str

    def __str__(self) -> str:
        return f"{self.object}: {self.message} (change {KEY_PREFIX}{self.key})"


# --- small helpers ----------------------------------------------------------


def get(d: Any, path: str, default: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def deep_merge(base: Any, over: Any) -> Any:
    """Helm's value coalescing: maps merge key by key, anything else (lists included) replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def obj_id(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind', '?')} {ns + '/' if ns else ''}{meta.get('name', '?')}"


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _expr_matches(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and str(labels[key]) in values
    if op == "NotIn":
        return not present or str(labels[key]) not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            a, b = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector: matchLabels and matchExpressions ANDed; an empty selector matches everything."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if str(labels.get(k)) != str(v) or k not in labels:
            return False
    return all(_expr_matches(labels, e) for e in selector.get("matchExpressions") or [])


def node_selector_term_matches(term: Mapping[str, Any], node: "Node") -> bool:
    """A NodeSelectorTerm: its expressions and fields ANDed; an empty term matches no node."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    return all(_expr_matches(node.labels, e) for e in exprs) and all(
        _expr_matches({"metadata.name": node.name}, f) for f in fields)


_ROLE_TAINT_LOOP = re.compile(r"for (\w+) in [^\n]*\bnode-role\.kubernetes\.io/control-plane\b[^\n]*\n(?:[^\n]*\n){0,4}?[^\n]*\"\$\{\1\}:NoSchedule-\"")


def removes_control_plane_taint(script: str) -> bool:
    """Whether the init VM's kubernetes phase removes kubeadm's control-plane taint (scripts/guest/kubernetes.sh)."""
    return "node-role.kubernetes.io/control-plane:NoSchedule-" in script or bool(_ROLE_TAINT_LOOP.search(script))


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' Toleration.ToleratesTaint (k8s.io/api/core/v1/toleration.go)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    op = toleration.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if op == "Exists":
        return True  # an empty key with Exists tolerates every taint
    if op == "Equal":
        return bool(key) and str(toleration.get("value") or "") == str(taint.get("value") or "")
    return False


def untolerated(tolerations: Iterable[Mapping[str, Any]], taints: Iterable[Mapping[str, Any]]) -> list[dict]:
    tols = list(tolerations or [])
    return [dict(t) for t in taints if t.get("effect") in BLOCKING_EFFECTS and not any(tolerates(x, t) for x in tols)]


def taint_text(t: Mapping[str, Any]) -> str:
    return f"{t['key']}{'=' + str(t['value']) if t.get('value') else ''}:{t['effect']}"


def script_exports(text: str) -> dict[str, str]:
    """The `export K=V` header render/guest_scripts.py writes at the top of each phase."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^export (GS_\w+)=(.*)$", line)
        if m:
            parts = shlex.split(m.group(2)) if m.group(2) else [""]
            out[m.group(1)] = parts[0] if parts else ""
        elif out and not line.startswith(("export ", "#", "set ")) and line.strip():
            break
    return out


# --- the plan, viewed as a cluster -----------------------------------------


@dataclass
class Node:
    name: str
    labels: dict[str, str]
    taints: list[dict[str, str]]
    gpus: int
    handlers: set[str] | None  # None: unknown (no container-runtime phase in the plan)
    kubelet_labels: dict[str, str] = field(default_factory=dict)  # what kubelet registers itself with (--node-labels)


@dataclass
class Workload:
    """A pod template, from a manifest or modelled from a chart's values."""

    id: str
    namespace: str
    labels: dict[str, str]
    spec: dict[str, Any]  # nodeSelector, affinity, tolerations, runtimeClassName, containers
    origin: str  # "manifest" or "helm release <name>"
    gpu: bool = False  # placed on GPU nodes by design (chart model)


@dataclass
class Release:
    name: str
    chart: str
    namespace: str
    values: dict[str, Any]  # as rendered
    effective: dict[str, Any]  # merged over the modelled chart defaults
    resource: str = ""  # the resources.json row (a helm.v3 Release or a helm.v4 Chart)
    cluster: str | None = None
    """The Kubernetes provider the release is installed with (resources.json `provider`)."""
    creates_namespace: bool = False
    """helm.v3.Release createNamespace."""

    @property
    def id(self) -> str:
        return f"helm release {self.name}"


@dataclass
class Cluster:
    cfg: StackConfig
    objects: list[dict[str, Any]]  # manifests and typed resources, plus what charts/operators create (origin in "_origin")
    releases: list[Release]
    nodes: list[Node]
    workloads: list[Workload]
    unknown_groups: list[str] = field(default_factory=list)
    files: Mapping[str, str] = field(default_factory=dict)
    rows: tuple[dict[str, Any], ...] = ()  # resources.json, for dependencies

    @property
    def mode(self) -> str:
        return self.cfg.kubernetes.mode if self.cfg.kubernetes else "none"

    def release(self, chart: str) -> Release | None:
        return next((r for r in self.releases if r.chart == chart), None)

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") in kinds]

    def namespace_labels(self, ns: str) -> dict[str, str]:
        labels = {"kubernetes.io/metadata.name": ns}
        for o in self.of_kind("Namespace"):
            if (o.get("metadata") or {}).get("name") == ns:
                labels.update(labels_of(o))
        return labels


# --- chart models -------------------------------------------------------------


@dataclass(frozen=True)
class ChartWorkload:
    kind: str
    name: str
    prefix: str  # values path holding nodeSelector / tolerations / affinity / runtimeClassName
    enabled: tuple[str, ...] = ()  # values paths that must all be true
    fixed_selector: Mapping[str, str] = field(default_factory=dict)  # set by the chart or operator, not by values
    tolerations_path: str | None = None  # when tolerations live elsewhere (GPU Operator operands)
    gpu: bool = False
    runtime_class_path: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[Mapping[str, Any], ...] = ()  # container ports, where a Service of the model targets them


@dataclass(frozen=True)
class ChartImage:
    path: str  # values path of the repository (or registry) field
    enabled: tuple[str, ...] = ()
    registry_only: bool = False  # the field is a registry host, not a repository


@dataclass(frozen=True)
class ChartModel:
    source: str  # where the defaults were read
    defaults: Mapping[str, Any]  # the subset of the chart's default values the model reads
    workloads: tuple[ChartWorkload, ...]
    images: tuple[ChartImage, ...] = ()


_CP_TOLERATION = {"key": "node-role.kubernetes.io/control-plane", "operator": "Equal", "value": "", "effect": "NoSchedule"}
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_GPU_OPERANDS = (  # (values key, DaemonSet, nvidia.com/gpu.deploy.<label>) the operator deploys on GPU nodes
    ("devicePlugin", "nvidia-device-plugin-daemonset", "device-plugin"),
    ("dcgmExporter", "nvidia-dcgm-exporter", "dcgm-exporter"),
    ("gfd", "gpu-feature-discovery", "gpu-feature-discovery"),
    ("toolkit", "nvidia-container-toolkit-daemonset", "container-toolkit"),
    ("driver", "nvidia-driver-daemonset", "driver"),
    ("dcgm", "nvidia-dcgm", "dcgm"),
    ("nodeStatusExporter", "nvidia-node-status-exporter", "node-status-exporter"),
)
# operands deployed on every GPU node, with no values switch
_GPU_OPERATOR_ALWAYS = (("nvidia-operator-validator", "operator-validator"),)

CHARTS: dict[str, ChartModel] = {
    "nvidia-device-plugin": ChartModel(
        "NVIDIA/k8s-device-plugin v0.20.0 deployments/helm/nvidia-device-plugin/values.yaml",
        {"nodeSelector": {}, "runtimeClassName": None,
         "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
             {"matchExpressions": [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}]},
             {"matchExpressions": [{"key": "feature.node.kubernetes.io/cpu-model.vendor_id", "operator": "In", "values": ["NVIDIA"]}]},
             {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]},
         ]}}},
         "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, dict(_GPU_TOLERATION)],
         "image": {"repository": "nvcr.io/nvidia/k8s-device-plugin"}},
        (ChartWorkload("DaemonSet", "nvidia-device-plugin", "", gpu=True, runtime_class_path="runtimeClassName"),),
        (ChartImage("image.repository"),),
    ),
    "gpu-operator": ChartModel(
        "NVIDIA/gpu-operator v26.7.0 deployments/gpu-operator/values.yaml and charts/node-feature-discovery/values.yaml (0.19.0)",
        {
            "nfd": {"enabled": True, "nodefeaturerules": False},
            "clusterPolicy": {"deployCR": True}, "gpuCluster": {"deployCR": False},
            "daemonsets": {"tolerations": [dict(_GPU_TOLERATION)]},
            "operator": {"repository": "nvcr.io/nvidia", "runtimeClass": "nvidia", "nodeSelector": {"kubernetes.io/os": "linux"},
                         "tolerations": [dict(_CP_TOLERATION)],
                         "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {
                             "matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "In", "values": [""]}]}}]}}},
            "validator": {"repository": "nvcr.io/nvidia"},
            "driver": {"enabled": True, "repository": "nvcr.io/nvidia", "nvidiaDriverCRD": {"enabled": False, "deployDefaultCR": True}},
            "toolkit": {"enabled": True, "repository": "nvcr.io/nvidia/k8s"},
            "devicePlugin": {"enabled": True, "repository": "nvcr.io/nvidia"},
            "dcgm": {"enabled": False, "repository": "nvcr.io/nvidia/cloud-native"},
            "dcgmExporter": {"enabled": True, "repository": "nvcr.io/nvidia/k8s",
                             "serviceMonitor": {"enabled": True, "additionalLabels": {}}},
            "gfd": {"enabled": True, "repository": "nvcr.io/nvidia"},
            "migManager": {"enabled": True, "repository": "nvcr.io/nvidia/cloud-native"},
            "nodeStatusExporter": {"enabled": False, "repository": "nvcr.io/nvidia"},
            "node-feature-discovery": {
                "image": {"repository": "registry.k8s.io/nfd/node-feature-discovery"},
                "master": {"enable": True, "nodeSelector": {}, "tolerations": [dict(_CP_TOLERATION)], "affinity": {}},
                "worker": {"enable": True, "nodeSelector": {}, "tolerations": [dict(_CP_TOLERATION), dict(_GPU_TOLERATION)], "affinity": {}},
                "gc": {"enable": True, "nodeSelector": {}, "tolerations": [], "affinity": {}},
            },
        },
        (
            # templates/operator.yaml: pod label app: gpu-operator, container port `metrics` 8080
            ChartWorkload("Deployment", "gpu-operator", "operator", ports=({"name": "metrics", "containerPort": 8080},)),
            ChartWorkload("Deployment", "node-feature-discovery-master", "node-feature-discovery.master", ("nfd.enabled", "node-feature-discovery.master.enable")),
            ChartWorkload("DaemonSet", "node-feature-discovery-worker", "node-feature-discovery.worker", ("nfd.enabled", "node-feature-discovery.worker.enable")),
            ChartWorkload("Deployment", "node-feature-discovery-gc", "node-feature-discovery.gc", ("nfd.enabled", "node-feature-discovery.gc.enable")),
            *(ChartWorkload("DaemonSet", ds, key, (f"{key}.enabled",), {f"nvidia.com/gpu.deploy.{label}": "true"},
                            "daemonsets.tolerations", True, "operator.runtimeClass",
                            {"app": ds})
              for key, ds, label in _GPU_OPERANDS),
            *(ChartWorkload("DaemonSet", ds, "validator", (), {f"nvidia.com/gpu.deploy.{label}": "true"},
                            "daemonsets.tolerations", True, "operator.runtimeClass", {"app": ds})
              for ds, label in _GPU_OPERATOR_ALWAYS),
        ),
        (
            ChartImage("operator.repository"), ChartImage("validator.repository"),
            *(ChartImage(f"{key}.repository", (f"{key}.enabled",)) for key, _, _ in _GPU_OPERANDS),
            ChartImage("migManager.repository", ("migManager.enabled",)),
            ChartImage("node-feature-discovery.image.repository", ("nfd.enabled",)),
        ),
    ),
    "kube-prometheus-stack": ChartModel(
        "prometheus-community/helm-charts kube-prometheus-stack 88.5.3 charts/kube-prometheus-stack/values.yaml; "
        "the grafana, kube-state-metrics and prometheus-node-exporter scheduling defaults are their subcharts' "
        "(assumed, not pinned here: node-exporter tolerates every NoSchedule taint, the others none)",
        {
            "global": {"imageRegistry": ""},
            "crds": {"enabled": True},
            "prometheus": {"enabled": True, "prometheusSpec": {
                "nodeSelector": {}, "tolerations": [], "affinity": {}, "storageSpec": {},
                "serviceMonitorSelectorNilUsesHelmValues": True, "serviceMonitorSelector": {}, "serviceMonitorNamespaceSelector": {},
                "podMonitorSelectorNilUsesHelmValues": True, "podMonitorSelector": {}, "podMonitorNamespaceSelector": {},
                "ruleSelectorNilUsesHelmValues": True, "ruleSelector": {}, "ruleNamespaceSelector": {}}},
            "alertmanager": {"enabled": True, "alertmanagerSpec": {"nodeSelector": {}, "tolerations": [], "affinity": {}, "storage": {}}},
            "prometheusOperator": {"enabled": True, "nodeSelector": {}, "tolerations": [], "affinity": {}},
            "grafana": {"enabled": True, "nodeSelector": {}, "tolerations": [], "affinity": {},
                        "persistence": {"enabled": False},
                        "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1", "searchNamespace": "ALL"}}},
            "kubeStateMetrics": {"enabled": True},
            "kubeControllerManager": {"enabled": True}, "kubeScheduler": {"enabled": True},
            "kubeEtcd": {"enabled": True}, "kubeProxy": {"enabled": True},
            "kube-state-metrics": {"nodeSelector": {}, "tolerations": [], "affinity": {}},
            "nodeExporter": {"enabled": True},
            "prometheus-node-exporter": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                         "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}], "affinity": {}},
        },
        (
            ChartWorkload("StatefulSet", "prometheus", "prometheus.prometheusSpec", ("prometheus.enabled",)),
            ChartWorkload("StatefulSet", "alertmanager", "alertmanager.alertmanagerSpec", ("alertmanager.enabled",)),
            ChartWorkload("Deployment", "operator", "prometheusOperator", ("prometheusOperator.enabled",)),
            ChartWorkload("Deployment", "grafana", "grafana", ("grafana.enabled",)),
            ChartWorkload("Deployment", "kube-state-metrics", "kube-state-metrics", ("kubeStateMetrics.enabled",)),
            ChartWorkload("DaemonSet", "prometheus-node-exporter", "prometheus-node-exporter", ("nodeExporter.enabled",)),
        ),
        (ChartImage("global.imageRegistry", registry_only=True),),
    ),
    # The operator then runs calico-node with tolerations for every taint.
    "tigera-operator": ChartModel(
        "projectcalico/calico v3.32.1 charts/tigera-operator/values.yaml",
        {"nodeSelector": {"kubernetes.io/os": "linux"}, "affinity": {},
         "tolerations": [{"effect": "NoExecute", "operator": "Exists"}, {"effect": "NoSchedule", "operator": "Exists"}],
         "tigeraOperator": {"registry": "quay.io"}, "installation": {"enabled": True, "registry": ""},
         "apiServer": {"enabled": True}, "goldmane": {"enabled": True}, "whisker": {"enabled": True},
         "defaultFelixConfiguration": {"enabled": False}, "manageCRDs": True},
        (ChartWorkload("Deployment", "tigera-operator", ""),),
        (ChartImage("tigeraOperator.registry", registry_only=True),
         ChartImage("installation.registry", ("installation.enabled",), registry_only=True)),
    ),
    # rancher/local-path-provisioner deploy/chart/local-path-provisioner/values.yaml
    "local-path-provisioner": ChartModel(
        "rancher/local-path-provisioner deploy/chart/local-path-provisioner/values.yaml (assumed; verify against the pinned chart)",
        {"nodeSelector": {}, "tolerations": [], "affinity": {},
         "storageClass": {"create": True, "name": "local-path", "defaultClass": False},
         "image": {"repository": "rancher/local-path-provisioner"}},
        (ChartWorkload("Deployment", "local-path-provisioner", ""),),
        (ChartImage("image.repository"),),
    ),
}


def _enabled(values: Mapping[str, Any], paths: Iterable[str]) -> bool:
    return all(get(values, p) is True for p in paths)


def _pod_spec_from(values: Mapping[str, Any], w: ChartWorkload) -> dict[str, Any]:
    base = get(values, w.prefix, {}) if w.prefix else values
    base = base if isinstance(base, dict) else {}
    selector = {**(base.get("nodeSelector") or {}), **w.fixed_selector} if not w.tolerations_path else dict(w.fixed_selector)
    spec = {
        "nodeSelector": selector,
        "tolerations": list((get(values, w.tolerations_path) if w.tolerations_path else base.get("tolerations")) or []),
        "affinity": {} if w.tolerations_path else (base.get("affinity") or {}),
    }
    if w.runtime_class_path and get(values, w.runtime_class_path):
        spec["runtimeClassName"] = get(values, w.runtime_class_path)
    return spec


# --- building the cluster view ----------------------------------------------


def _typed_object(row: Mapping[str, Any]) -> dict[str, Any] | None:
    m = re.match(r"^kubernetes:([\w.-]+)/(v\w+):(\w+)$", row.get("type", ""))
    if not m or m.group(1) in ("helm.sh", "yaml"):
        return None
    group, version, kind = m.groups()
    inputs = dict(row.get("inputs") or {})
    return {"apiVersion": version if group == "core" else f"{group}/{version}", "kind": kind, **inputs, "_origin": "resource",
            "_resource": row.get("name", ""), "_cluster": row.get("provider")}


def _operator_objects(rel: Release, service_monitor_crd: bool) -> list[dict[str, Any]]:
    """What the GPU Operator creates from its ClusterPolicy (v26.7.0 assets/, object_controls.go, state_manager.go)."""
    v, ns, out = rel.effective, rel.namespace, []
    origin = f"{rel.id} (created by the GPU Operator)"
    runtime_class = get(v, "operator.runtimeClass") or "nvidia"
    out.append({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": runtime_class},
                "handler": runtime_class, "_origin": origin})
    # state-operator-metrics is always enabled (controllers/state_manager.go isStateEnabled); its Service and,
    # where the ServiceMonitor CRD exists, its ServiceMonitor are assets/state-operator-metrics/0200_service.yaml
    # and 0300_service_monitor.yaml (labels app: gpu-operator only), the namespace filled in and
    # ClusterPolicy spec.operator.metrics.serviceMonitor.additionalLabels merged into the labels
    # (controllers/object_controls.go ServiceMonitor, applyServiceMonitorCustomEdits; the chart copies
    # operator.metrics.serviceMonitor into the ClusterPolicy, templates/clusterpolicy.yaml)
    app = {"app": "gpu-operator"}
    out.append({"apiVersion": "v1", "kind": "Service", "_origin": origin,
                "metadata": {"name": "gpu-operator", "namespace": ns, "labels": dict(app)},
                "spec": {"selector": dict(app), "ports": [{"name": "gpu-operator-metrics", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]}})
    if service_monitor_crd:
        out.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "_origin": origin,
                    "metadata": {"name": "gpu-operator", "namespace": ns,
                                 "labels": {**app, **(get(v, "operator.metrics.serviceMonitor.additionalLabels") or {})}},
                    "spec": {"selector": {"matchLabels": dict(app)}, "namespaceSelector": {"matchNames": [ns]}, "jobLabel": "operator",
                             "endpoints": [{"port": "gpu-operator-metrics", "path": "/metrics"}]}})
    if get(v, "dcgmExporter.enabled") is True:
        app = {"app": "nvidia-dcgm-exporter"}
        out.append({"apiVersion": "v1", "kind": "Service", "_origin": origin,
                    "metadata": {"name": "nvidia-dcgm-exporter", "namespace": ns, "labels": dict(app)},
                    "spec": {"selector": dict(app), "ports": [{"name": "gpu-metrics", "port": 9400, "targetPort": 9400}]}})
        if get(v, "dcgmExporter.serviceMonitor.enabled") is True:
            labels = {**app, **(get(v, "dcgmExporter.serviceMonitor.additionalLabels") or {})}
            out.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "_origin": origin,
                        "metadata": {"name": "nvidia-dcgm-exporter", "namespace": ns, "labels": labels},
                        "spec": {"selector": {"matchLabels": dict(app)}, "namespaceSelector": {"matchNames": [ns]},
                                 "endpoints": [{"port": "gpu-metrics", "path": "/metrics"}]}})
    return out


def _chart_workloads(rel: Release) -> list[Workload]:
    model = CHARTS.get(rel.chart)
    if model is None:
        return []
    out = []
    for w in model.workloads:
        if not _enabled(rel.effective, w.enabled):
            continue
        spec = _pod_spec_from(rel.effective, w)
        ports = [{"name": "metrics", "containerPort": 9400}] if w.name == "nvidia-dcgm-exporter" else [dict(p) for p in w.ports]
        spec["containers"] = [{"name": w.name, "ports": ports}]
        out.append(Workload(f"{w.kind} {rel.namespace}/{w.name}", rel.namespace, dict(w.labels) or {"app": w.name},
                            spec, rel.id, gpu=w.gpu))
    return out


def kubeadm_workloads() -> list[Workload]:
    """What `kubeadm init` itself runs (kubeadm's addon manifests: cmd/kubeadm/app/phases/addons/dns and proxy)."""
    coredns = {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "coredns", "ports": []}],
               "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                               {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}
    proxy = {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "kube-proxy", "ports": []}],
             "tolerations": [{"operator": "Exists"}]}
    return [Workload("Deployment kube-system/coredns", "kube-system", {"k8s-app": "kube-dns"}, coredns, "kubeadm init"),
            Workload("DaemonSet kube-system/kube-proxy", "kube-system", {"k8s-app": "kube-proxy"}, proxy, "kubeadm init")]


def _pod_template(obj: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]] | None:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return labels_of(obj), spec
    if kind == "CronJob":
        spec = get(spec, "jobTemplate.spec", {}) or {}
    tpl = spec.get("template") or {}
    return dict(get(tpl, "metadata.labels", {}) or {}), tpl.get("spec") or {}


def _nodes(plan: Plan, cfg: StackConfig, gpu_operator: Release | None) -> list[Node]:
    k = cfg.kubernetes
    nodes = []
    for vm in cfg.vms:
        script = plan.files.get(f"guest/{vm.name}-guest-kubernetes.sh")
        runtime = next((t for p, t in sorted(plan.files.items())
                        if p.startswith(f"guest/{vm.name}-guest-") and p.endswith("container-runtime.sh")), None)
        labels = {"kubernetes.io/hostname": vm.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
        taints: list[dict[str, str]] = []
        kubelet_labels: dict[str, str] = {}
        if script is not None and UNKNOWN_UNTIL_DEPLOY in script and k is not None:
            # a joining VM's phase waits for the init VM's outputs; its labels and taints are the config's
            # (render/guest_scripts.py gives a VM without GPUs neither)
            kubelet_labels = dict(k.node_labels) if vm.gpus else {}
            labels.update(kubelet_labels)
            taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in k.node_taints] if vm.gpus else []
        elif script is not None:
            env = script_exports(script)
            kubelet_labels = dict(p.split("=", 1) for p in env.get("GS_NODE_LABELS", "").split() if "=" in p)
            labels.update(kubelet_labels)
            for t in env.get("GS_NODE_TAINTS", "").split():
                kv, _, effect = t.rpartition(":")
                key, _, value = kv.partition("=")
                taints.append({"key": key, "value": value, "effect": effect})
            if env.get("GS_K8S_ROLE") == "init":
                labels.update({"node-role.kubernetes.io/control-plane": "", "node.kubernetes.io/exclude-from-external-load-balancers": ""})
                if not removes_control_plane_taint(script):
                    taints.append(dict(CONTROL_PLANE_TAINT))
        elif k is not None and k.mode == "existing":
            # declared for the GPU VMs' nodes; a VM without GPUs is not declared to carry them
            if vm.gpus:
                labels.update(k.node_labels)
                taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in k.node_taints]
        else:
            continue  # not a Kubernetes node
        if gpu_operator is not None and vm.gpus:
            if get(gpu_operator.effective, "nfd.enabled") is True:
                labels["feature.node.kubernetes.io/pci-10de.present"] = "true"
            labels["nvidia.com/gpu.present"] = "true"
            labels["nvidia.com/gpu.deploy.operands"] = "true"
            for _, _, label in _GPU_OPERANDS:
                labels[f"nvidia.com/gpu.deploy.{label}"] = "true"
            for _, label in _GPU_OPERATOR_ALWAYS:
                labels[f"nvidia.com/gpu.deploy.{label}"] = "true"
        nodes.append(Node(vm.name, labels, taints, len(vm.gpus), runtime_handlers(runtime) if runtime else None, kubelet_labels))
    return nodes


def runtime_handlers(script: str) -> set[str]:
    """CRI runtime handlers the container-runtime phase leaves configured (see the module docstring)."""
    env = script_exports(script)
    runtime = env.get("GS_RUNTIME", "containerd")
    if runtime == "docker":
        return {"docker"}
    handlers = {"runc"}
    if not env.get("GS_TOOLKIT_VERSION"):
        return handlers  # a VM without GPUs: the phase installs no toolkit and configures no nvidia runtime
    for m in re.finditer(r"nvidia-ctk runtime configure ([^\n]*)", script):
        args = m.group(1)
        if "--runtime=containerd" not in args:
            continue
        name = re.search(r"--nvidia-runtime-name[= ](\S+)", args)
        handlers.add(name.group(1).strip("'\"") if name else "nvidia")
    return handlers


def build_cluster(plan: Plan, cfg: StackConfig) -> Cluster:
    objects: list[dict[str, Any]] = []
    unknown = []
    group_cluster = {row.get("name"): row.get("provider") for row in plan.resources if row.get("type") == GROUP_TYPE}
    for path, text in sorted(plan.files.items()):
        if not path.startswith("manifests/") or not path.endswith(".yaml"):
            continue
        if path.endswith("/UNKNOWN.yaml"):
            unknown.append(path.split("/")[1])
            continue
        doc = yaml.safe_load(text)
        if isinstance(doc, dict):
            objects.append({**doc, "_origin": path, "_resource": path.split("/")[1], "_cluster": group_cluster.get(path.split("/")[1])})
    releases = []
    for row in plan.resources:
        typed = _typed_object(row)
        if typed is not None:
            objects.append(typed)
        if row.get("type") not in (RELEASE_TYPE, CHART_TYPE):
            continue
        inputs = row.get("inputs") or {}
        name = inputs.get("name") or row.get("name")
        text = plan.files.get(f"helm/{name}.values.yaml")
        values = (yaml.safe_load(text) if text is not None else inputs.get("values")) or {}
        chart = inputs.get("chart", "")
        model = CHARTS.get(chart)
        effective = deep_merge(model.defaults, values) if model else values
        releases.append(Release(name, chart, inputs.get("namespace") or "default", values, effective, row.get("name", ""),
                                row.get("provider"), bool(inputs.get("createNamespace"))))
    operator = next((r for r in releases if r.chart == "gpu-operator"), None)
    if operator is not None:
        sm_crd = "monitoring.coreos.com/ServiceMonitor" in _crds_installed(objects, releases)
        objects += _operator_objects(operator, sm_crd)
    workloads = []
    for obj in objects:
        if obj.get("kind") in WORKLOAD_KINDS:
            labels, spec = _pod_template(obj) or ({}, {})
            workloads.append(Workload(obj_id(obj), (obj.get("metadata") or {}).get("namespace") or "default",
                                      labels, spec, "manifest"))
    for rel in releases:
        workloads += _chart_workloads(rel)
    if cfg.kubernetes is not None and cfg.kubernetes.mode == "init":
        workloads += kubeadm_workloads()
    return Cluster(cfg, objects, releases, _nodes(plan, cfg, operator), workloads, unknown, plan.files, tuple(plan.resources))


# --- rules --------------------------------------------------------------------


def _requests_gpu(spec: Mapping[str, Any]) -> bool:
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = c.get("resources") or {}
        for section in ("limits", "requests"):
            if any(k.startswith("nvidia.com/") for k in (res.get(section) or {})):
                return True
    return False


def _is_gpu_workload(w: Workload) -> bool:
    if w.gpu or _requests_gpu(w.spec):
        return True
    keys = list((w.spec.get("nodeSelector") or {}))
    terms = get(w.spec, "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms", []) or []
    keys += [e.get("key", "") for t in terms for e in t.get("matchExpressions") or []]
    return any(k.startswith(("nvidia.com/", "feature.node.kubernetes.io/pci-10de")) for k in keys)


def labels_fit(spec: Mapping[str, Any], node: Node) -> list[str]:
    """Why the pod's nodeSelector and required node affinity do not match the node ([] when they do)."""
    why = [f"nodeSelector {k}={v}" for k, v in (spec.get("nodeSelector") or {}).items() if node.labels.get(k) != str(v)]
    required = get(spec, "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        terms = required.get("nodeSelectorTerms") or []
        if not any(node_selector_term_matches(t, node) for t in terms):
            why.append("required node affinity " + " or ".join(
                "(" + ", ".join(f"{e.get('key')} {e.get('operator')} {','.join(map(str, e.get('values') or []))}".strip()
                                for e in t.get("matchExpressions") or []) + ")" for t in terms))
    return why


# labels kubelet may set on its own node (--node-labels); others in the kubernetes.io and
# k8s.io namespaces make kubelet refuse to start (k8s.io/kubernetes pkg/kubelet/apis/well_known_labels.go)
_KUBELET_LABELS = {"kubernetes.io/hostname", "kubernetes.io/instance-type", "kubernetes.io/os", "kubernetes.io/arch",
                   "beta.kubernetes.io/instance-type", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
                   "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
                   "failure-domain.kubernetes.io/zone", "failure-domain.kubernetes.io/region",
                   "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "node.kubernetes.io/instance-type"}
_KUBELET_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")


def _kubelet_may_set(label: str) -> bool:
    ns = label.split("/", 1)[0] if "/" in label else ""
    restricted = ns in ("kubernetes.io", "k8s.io") or ns.endswith((".kubernetes.io", ".k8s.io"))
    return not restricted or label in _KUBELET_LABELS or label.startswith(_KUBELET_PREFIXES)


def _gpu_resources(c: Cluster) -> tuple[set[str], int, bool]:
    """(extended resources a device plugin in the plan advertises, shares per GPU, MIG mixed)."""
    plugin_cfg: dict[str, Any] = {}
    present = False
    dp = c.release("nvidia-device-plugin")
    if dp is not None:
        present = True
        plugin_cfg = yaml.safe_load(get(dp.values, "config.map.default") or "{}") or {}
    for o in c.of_kind("DaemonSet"):
        if get(o, "metadata.name") == "nvidia-device-plugin-daemonset":
            present = True
            cm = next((x for x in c.of_kind("ConfigMap") if get(x, "metadata.name") == "nvidia-device-plugin-config"), None)
            plugin_cfg = yaml.safe_load((cm or {}).get("data", {}).get("config.yaml") or "{}") or {}
    op = c.release("gpu-operator")
    if op is not None and get(op.effective, "devicePlugin.enabled") is True:
        present = True
    if not present:
        return set(), 1, False
    ts = get(plugin_cfg, "sharing.timeSlicing") or {}
    replicas = max([int(r.get("replicas", 1)) for r in ts.get("resources") or []] or [1])
    mixed = get(plugin_cfg, "flags.migStrategy") == "mixed" or (op is not None and get(op.effective, "mig.strategy") == "mixed")
    return ({"nvidia.com/gpu.shared"} if ts.get("renameByDefault") else {"nvidia.com/gpu"}), replicas, mixed


def _gpu_requests(spec: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ct in spec.get("containers") or []:
        res = ct.get("resources") or {}
        for k, v in {**(res.get("requests") or {}), **(res.get("limits") or {})}.items():
            if k.startswith("nvidia.com/"):
                try:
                    out[k] = max(out.get(k, 0), int(str(v)))
                except ValueError:
                    out[k] = max(out.get(k, 0), 1)
    return out


def rule_scheduling(c: Cluster) -> list[Violation]:
    """Every workload fits at least one node: labels (nodeSelector, required node affinity), taints, GPUs.

    Preferred affinity and PreferNoSchedule never block. A pod that requests
    nvidia.com/* needs a device plugin in the plan that advertises that name
    (nvidia.com/gpu, or nvidia.com/gpu.shared with renameByDefault) and a node
    with that many (GPUs x time-slicing replicas). Modes join/existing:
    non-GPU workloads may land on nodes outside the plan and are not checked.
    Node labels kubelet may not set on itself (kubernetes.io / k8s.io
    namespaces outside the allowed list) stop kubelet from starting.
    """
    out = []
    if not c.nodes:
        return out
    for n in c.nodes:
        for label in sorted(k for k in n.kubelet_labels if not _kubelet_may_set(k)):
            out.append(Violation("scheduling", f"Node {n.name}", LABELS_KEY,
                                 f"kubelet refuses --node-labels {label}: kubelet may not set labels in the kubernetes.io/k8s.io namespaces"))
    advertised, replicas, mixed = _gpu_resources(c)
    for w in c.workloads:
        wanted = _gpu_requests(w.spec)
        unserved = sorted(r for r in wanted if r not in advertised and not (mixed and r.startswith("nvidia.com/mig-")))
        if unserved:
            out.append(Violation("scheduling", w.id, "addons.devicePlugin.enabled",
                                 f"requests {', '.join(unserved)} but no device plugin in the plan advertises it"
                                 + (f" (advertised: {', '.join(sorted(advertised))})" if advertised else "")))
            continue
        most = max((n.gpus * replicas for n in c.nodes), default=0)
        if any(v > most for r, v in wanted.items() if r in advertised) and most:
            out.append(Violation("scheduling", w.id, "vms", f"requests {max(wanted.values())} GPUs; the largest node offers {most}"))
            continue
        if c.mode != "init" and not _is_gpu_workload(w):
            continue
        candidates = [n for n in c.nodes if n.gpus] if _requests_gpu(w.spec) else list(c.nodes)
        if not candidates:
            out.append(Violation("scheduling", w.id, "vms", "requests a GPU but no node of the plan has one"))
            continue
        by_label = [n for n in candidates if not labels_fit(w.spec, n)]
        if not by_label:
            n = candidates[0]
            out.append(Violation("scheduling", w.id, LABELS_KEY,
                                 f"cannot be placed: {'; '.join(labels_fit(w.spec, n))} do not match node {n.name} "
                                 f"(labels {', '.join(f'{k}={v}' for k, v in sorted(n.labels.items()) if not k.startswith(('kubernetes.io/', 'beta.')))})"))
            continue
        if any(not untolerated(w.spec.get("tolerations") or [], n.taints) for n in by_label):
            continue
        n = by_label[0]
        missing = untolerated(w.spec.get("tolerations") or [], n.taints)
        key = "kubernetes" if missing and all(t["key"] == CONTROL_PLANE_TAINT["key"] for t in missing) else TAINTS_KEY
        out.append(Violation("scheduling", w.id, key,
                             f"cannot be placed: does not tolerate {', '.join(taint_text(t) for t in missing)} on node {n.name}"))
    return out


def rule_networking(c: Cluster) -> list[Violation]:
    """kubeadm init leaves the node NotReady until a CNI runs: one known CNI release or DaemonSet is required.

    Known: Helm charts tigera-operator, calico, flannel, cilium; DaemonSets
    calico-node, kube-flannel-ds, cilium. A flannel podCidr or Calico IP pool
    must lie inside kubernetes.podCidr.
    """
    if c.mode != "init":
        return []
    cnis = [r for r in c.releases if r.chart in CNI_CHARTS]
    manifests = [o for o in c.of_kind("DaemonSet") if (o.get("metadata") or {}).get("name") in CNI_DAEMONSETS]
    if not cnis and not manifests:
        return [Violation("networking", "cluster (kubeadm init)", POD_NETWORK_KEY,
                          "no pod network: no CNI release (" + ", ".join(CNI_CHARTS) + ") or CNI DaemonSet in the plan, "
                          "so the node stays NotReady and every pod Pending")]
    out = []
    pod_cidr = ipaddress.ip_network(c.cfg.kubernetes.pod_cidr, strict=False)
    for r in cnis:
        cidrs = [p.get("cidr") for p in get(r.values, "installation.calicoNetwork.ipPools", []) or []]
        if r.chart == "flannel" and get(r.values, "podCidr"):
            cidrs.append(get(r.values, "podCidr"))
        for cidr in cidrs:
            try:
                inside = ipaddress.ip_network(cidr, strict=False).subnet_of(pod_cidr)
            except (TypeError, ValueError):
                inside = False
            if not inside:
                out.append(Violation("networking", r.id, POD_CIDR_KEY, f"pod network CIDR {cidr} is not inside kubernetes.podCidr {pod_cidr}"))
    return out


def _storage_classes(c: Cluster) -> tuple[set[str], bool]:
    names, default = set(), declared_default_class(c.cfg)
    for o in c.of_kind("StorageClass"):
        names.add((o.get("metadata") or {}).get("name"))
        if str(get(o, "metadata.annotations", {}).get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true":
            default = True
    for r in c.releases:
        if r.chart == "local-path-provisioner" and get(r.effective, "storageClass.create") is True:
            names.add(get(r.effective, "storageClass.name"))
            default = default or get(r.effective, "storageClass.defaultClass") is True
    return names, default


def declared_storage_classes(cfg: StackConfig) -> set[str]:
    """Classes config declares present on a cluster gpu-stack did not create (modes join/existing)."""
    if cfg.kubernetes is None or cfg.kubernetes.mode == "init":
        return set()
    return {cfg.addons.monitoring.storage_class} if cfg.addons.monitoring.storage_class else set()


def declared_default_class(cfg: StackConfig) -> bool:
    """Config declares that a cluster gpu-stack did not create has a default class
    (addons.monitoring.defaultStorageClassExists, added on branch converge; absent here means no)."""
    if cfg.kubernetes is None or cfg.kubernetes.mode == "init":
        return False
    return getattr(cfg.addons.monitoring, "default_storage_class_exists", False) is True


def _claims(c: Cluster) -> list[tuple[str, dict[str, Any]]]:
    claims = []
    for o in c.of_kind("PersistentVolumeClaim"):
        claims.append((obj_id(o), o.get("spec") or {}))
    for o in c.of_kind("StatefulSet"):
        for t in get(o, "spec.volumeClaimTemplates", []) or []:
            claims.append((f"{obj_id(o)} volumeClaimTemplate {get(t, 'metadata.name', '?')}", t.get("spec") or {}))
    kps = c.release("kube-prometheus-stack")
    if kps is not None:
        v = kps.effective
        if get(v, "prometheus.enabled") is True and get(v, "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate"):
            claims.append((f"{kps.id} prometheus.prometheusSpec.storageSpec",
                           get(v, "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec", {}) or {}))
        if get(v, "alertmanager.enabled") is True and get(v, "alertmanager.alertmanagerSpec.storage.volumeClaimTemplate"):
            claims.append((f"{kps.id} alertmanager.alertmanagerSpec.storage",
                           get(v, "alertmanager.alertmanagerSpec.storage.volumeClaimTemplate.spec", {}) or {}))
        if get(v, "grafana.enabled") is True and get(v, "grafana.persistence.enabled") is True:
            claims.append((f"{kps.id} grafana.persistence", {"storageClassName": get(v, "grafana.persistence.storageClassName")}))
    return claims


def rule_storage(c: Cluster) -> list[Violation]:
    """Every claim binds: its storageClassName is a class in the plan (StorageClass object, or a provisioner
    release that creates it) or declared present in config; a claim without a class needs a default class."""
    names, default = _storage_classes(c)
    names |= declared_storage_classes(c.cfg)
    out = []
    for what, spec in _claims(c):
        cls = spec.get("storageClassName")
        if cls is None:
            if not default:
                out.append(Violation("storage", what, STORAGE_KEY,
                                     "claim names no storage class and the plan has no default StorageClass: it stays Pending"))
        elif cls == "":
            if not c.of_kind("PersistentVolume"):
                out.append(Violation("storage", what, STORAGE_KEY, "claim asks for a pre-provisioned volume (storageClassName \"\") but the plan has none"))
        elif cls not in names:
            out.append(Violation("storage", what, STORAGE_KEY,
                                 f"storage class {cls!r} is neither in the plan nor declared present"
                                 + (f" (classes: {', '.join(sorted(n for n in names if n))})" if any(names) else "")))
    return out


def _prometheus_selectors(kps: Release, kind: str) -> tuple[dict, dict]:
    """kube-prometheus-stack templates/prometheus/prometheus.yaml: (object selector, namespace selector)."""
    spec = get(kps.effective, "prometheus.prometheusSpec", {}) or {}
    base = {"ServiceMonitor": "serviceMonitor", "PodMonitor": "podMonitor", "PrometheusRule": "rule"}[kind]
    if spec.get(f"{base}Selector"):
        sel = spec[f"{base}Selector"]
    elif spec.get(f"{base}SelectorNilUsesHelmValues") is True:
        sel = {"matchLabels": {"release": kps.name}}
    else:
        sel = {}
    return sel, spec.get(f"{base}NamespaceSelector") or {}


def _pods_in(c: Cluster, namespaces: set[str] | None, selector: Mapping[str, Any]) -> list[Workload]:
    return [w for w in c.workloads if (namespaces is None or w.namespace in namespaces) and w.labels and selector_matches(selector, w.labels)]


def _container_ports(w: Workload) -> list[dict[str, Any]]:
    return [p for ct in w.spec.get("containers") or [] for p in ct.get("ports") or []]


def rule_scraping(c: Cluster) -> list[Violation]:
    """ServiceMonitors, PodMonitors and PrometheusRules are selected by Prometheus; monitors find their targets.

    Selectors as kube-prometheus-stack renders them: an explicit selector;
    else `release: <release name>` when *SelectorNilUsesHelmValues; else all.
    A namespace selector of {} selects every namespace. A ServiceMonitor's
    selector and endpoint port name must match a Service in the plan (or the
    one the GPU Operator creates), and that Service's selector must match pods.
    """
    monitors = c.of_kind("ServiceMonitor", "PodMonitor", "PrometheusRule")
    if not monitors:
        return []
    kps = c.release("kube-prometheus-stack")
    if kps is None or get(kps.effective, "prometheus.enabled") is not True:
        return [Violation("scraping", obj_id(m), MONITORING_KEY, "no Prometheus in the plan selects it") for m in monitors]
    out = []
    for m in monitors:
        kind, ns = m["kind"], get(m, "metadata.namespace") or "default"
        sel, ns_sel = _prometheus_selectors(kps, kind)
        if not selector_matches(sel, labels_of(m)):
            want = ", ".join(f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()) or json.dumps(sel, sort_keys=True)
            key = RELEASE_KEY if (sel.get("matchLabels") or {}).get("release") == kps.name else SELECTOR_KEY
            out.append(Violation("scraping", obj_id(m), key, f"not selected by Prometheus of {kps.id}: needs labels {want}"))
        if not selector_matches(ns_sel, c.namespace_labels(ns)):
            out.append(Violation("scraping", obj_id(m), SELECTOR_KEY, f"namespace {ns} is outside Prometheus' {kind} namespace selector"))
        if kind == "ServiceMonitor":
            out += _service_monitor_targets(c, m, ns)
        elif kind == "PodMonitor":
            out += _pod_monitor_targets(c, m, ns)
    return out


# kube-prometheus-stack values key -> (component, the flag that binds its metrics beyond 127.0.0.1, alert)
_CONTROL_PLANE_SCRAPES = {
    "kubeControllerManager": ("kube-controller-manager", "bind-address", "KubeControllerManagerDown"),
    "kubeScheduler": ("kube-scheduler", "bind-address", "KubeSchedulerDown"),
    "kubeEtcd": ("etcd", "listen-metrics-urls", "etcdMembersDown"),
    "kubeProxy": ("kube-proxy", "metricsBindAddress", "KubeProxyDown"),
}


def rule_targets(c: Cluster) -> list[Violation]:
    """Mode init: kubeadm's defaults bind kube-controller-manager, kube-scheduler, etcd metrics and kube-proxy
    metrics to 127.0.0.1, so kube-prometheus-stack's scrapes of them (on by default) are down and their *Down
    alerts fire forever, unless the scrape is off or the kubeadm invocation sets a config (`--config`) that
    names the component's bind flag."""
    kps = c.release("kube-prometheus-stack")
    if c.mode != "init" or kps is None:
        return []
    scripts = [t for p, t in sorted(c.files.items()) if p.startswith("guest/") and p.endswith("-guest-kubernetes.sh")]
    init = next((t for t in scripts if script_exports(t).get("GS_K8S_ROLE") == "init"), "")
    configured = "--config" in "".join(line for line in init.splitlines() if "kubeadm init" in line)
    out = []
    for key, (component, flag, alert) in _CONTROL_PLANE_SCRAPES.items():
        if get(kps.effective, f"{key}.enabled") is not True:
            continue
        if configured and flag in init:
            continue
        out.append(Violation("targets", f"{kps.id} {key}", "addons.monitoring",
                             f"kubeadm binds {component}'s metrics to 127.0.0.1, so this scrape is down and {alert} fires forever; "
                             f"switch {key}.enabled off or bind the metrics where Prometheus reaches them"))
    return out


def _monitor_namespaces(m: Mapping[str, Any], ns: str) -> set[str] | None:
    nsel = get(m, "spec.namespaceSelector", {}) or {}
    if nsel.get("any"):
        return None
    return set(nsel.get("matchNames") or [ns])


def _service_monitor_targets(c: Cluster, m: Mapping[str, Any], ns: str) -> list[Violation]:
    key = "addons.gpuOperator" if "GPU Operator" in str(m.get("_origin")) else "addons.monitoring"
    namespaces = _monitor_namespaces(m, ns)
    services = [s for s in c.of_kind("Service")
                if (namespaces is None or (get(s, "metadata.namespace") or "default") in namespaces)
                and selector_matches(get(m, "spec.selector", {}), labels_of(s))]
    if not services:
        return [Violation("scraping", obj_id(m), key, f"its selector {json.dumps(get(m, 'spec.selector', {}), sort_keys=True)} matches no Service in the plan")]
    out = []
    for ep in get(m, "spec.endpoints", []) or []:
        port = ep.get("port")
        if port and not any(p.get("name") == port for s in services for p in get(s, "spec.ports", []) or []):
            out.append(Violation("scraping", obj_id(m), key, f"endpoint port {port!r} is not a port name of {', '.join(obj_id(s) for s in services)}"))
    for s in services:
        s_ns = get(s, "metadata.namespace") or "default"
        pods = _pods_in(c, {s_ns}, {"matchLabels": get(s, "spec.selector", {}) or {}})
        if not get(s, "spec.selector"):
            out.append(Violation("scraping", obj_id(s), key, "Service has no selector, so it has no endpoints"))
        elif not pods:
            out.append(Violation("scraping", obj_id(s), key, f"Service selector {json.dumps(get(s, 'spec.selector'), sort_keys=True)} matches no pods in the plan"))
        else:
            ports = [p for w in pods for p in _container_ports(w)]
            for sp in get(s, "spec.ports", []) or []:
                target = sp.get("targetPort", sp.get("port"))
                if ports and not any(p.get("containerPort") == target or p.get("name") == target for p in ports):
                    out.append(Violation("scraping", obj_id(s), key, f"port {sp.get('name')!r} targets {target!r}, which no selected container exposes"))
    return out


def _pod_monitor_targets(c: Cluster, m: Mapping[str, Any], ns: str) -> list[Violation]:
    pods = _pods_in(c, _monitor_namespaces(m, ns), get(m, "spec.selector", {}) or {})
    if not pods:
        return [Violation("scraping", obj_id(m), "addons.monitoring", "its selector matches no pods in the plan")]
    names = {p.get("name") for w in pods for p in _container_ports(w)}
    return [Violation("scraping", obj_id(m), "addons.monitoring", f"podMetricsEndpoint port {ep.get('port')!r} is not a container port name of its pods")
            for ep in get(m, "spec.podMetricsEndpoints", []) or [] if ep.get("port") and ep.get("port") not in names]


def _is_dashboard(o: Mapping[str, Any], label: str) -> bool:
    if label in labels_of(o):
        return True
    for k, v in (o.get("data") or {}).items():
        if k.endswith(".json"):
            try:
                doc = json.loads(v)
            except (TypeError, ValueError):
                continue
            if isinstance(doc, dict) and "panels" in doc:
                return True
    return False


def rule_dashboards(c: Cluster) -> list[Violation]:
    """Dashboard ConfigMaps (a .json key holding `panels`, or the sidecar label) carry the Grafana sidecar's
    label and value (kube-prometheus-stack: grafana.sidecar.dashboards.label/labelValue, default grafana_dashboard "1")
    in a namespace the sidecar searches (searchNamespace, default ALL)."""
    kps = c.release("kube-prometheus-stack")
    sidecar = get(kps.effective, "grafana.sidecar.dashboards", {}) if kps else {}
    label, value = sidecar.get("label", "grafana_dashboard"), sidecar.get("labelValue")
    out = []
    for o in c.of_kind("ConfigMap"):
        if not _is_dashboard(o, label):
            continue
        if kps is None or get(kps.effective, "grafana.enabled") is not True or sidecar.get("enabled") is not True:
            out.append(Violation("dashboards", obj_id(o), MONITORING_KEY, "no Grafana dashboard sidecar in the plan loads it"))
            continue
        have = labels_of(o)
        if label not in have or (value not in (None, "") and str(have[label]) != str(value)):
            out.append(Violation("dashboards", obj_id(o), "addons.monitoring",
                                 f"the Grafana sidecar loads ConfigMaps labelled {label}={value!s}; this one has "
                                 f"{label + '=' + str(have[label]) if label in have else 'no such label'}"))
        search = sidecar.get("searchNamespace")
        ns = get(o, "metadata.namespace") or "default"
        allowed = None if search in (None, "ALL") else set(search if isinstance(search, list) else str(search).split(",")) | {kps.namespace}
        if allowed is not None and ns not in allowed:
            out.append(Violation("dashboards", obj_id(o), "addons.monitoring.namespace", f"the sidecar searches {sorted(allowed)}, not {ns}"))
    return out


def admitted_spec(w: Workload, rc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The pod spec of `w` after RuntimeClass admission: the class's scheduling.nodeSelector merged into the pod's
    nodeSelector and its scheduling.tolerations appended; None where a key the pod sets to another value gets the pod
    refused. No class: the spec as it is."""
    if rc is None:
        return w.spec
    scheduling = rc.get("scheduling") or {}
    selector = {str(k): str(v) for k, v in (scheduling.get("nodeSelector") or {}).items()}
    own = {str(k): str(v) for k, v in (w.spec.get("nodeSelector") or {}).items()}
    if any(k in own and own[k] != v for k, v in selector.items()):
        return None
    return {**w.spec, "nodeSelector": {**own, **selector},
            "tolerations": [*(w.spec.get("tolerations") or []), *(scheduling.get("tolerations") or [])]}


def runtime_class_nodes(w: Workload, rc: Mapping[str, Any], nodes: Iterable[Node]) -> list[Node]:
    """The plan's nodes a pod of `w` that names RuntimeClass `rc` can be scheduled on.

    Kubernetes semantics: RuntimeClass admission merges the class's scheduling.nodeSelector into the pod's
    nodeSelector (a key the pod sets to another value gets the pod refused) and appends its scheduling.tolerations
    (kubernetes plugin/pkg/admission/runtimeclass/admission.go setScheduling, read in a code index, not at a pinned
    tag); the scheduler then places the pod only on a node its nodeSelector and required node affinity match, whose
    NoSchedule/NoExecute taints it tolerates, and, for a request of nvidia.com/*, that has such allocatable: only a
    node with GPUs (a device plugin advertises nothing on a node without them; rule_scheduling checks the plugin)."""
    spec = admitted_spec(w, rc)
    if spec is None:
        return []  # refused at admission: no pod of it runs anywhere
    gpu = _requests_gpu(w.spec)
    return [n for n in nodes if not labels_fit(spec, n) and not untolerated(spec["tolerations"], n.taints) and (n.gpus or not gpu)]


def rule_runtime(c: Cluster) -> list[Violation]:
    """Every node a workload naming a RuntimeClass can land on has the class's handler configured (containerd config /
    docker daemon from the container-runtime phase), and every runtimeClassName names a RuntimeClass of the plan.

    Where a pod can land is the workload's own placement (nodeSelector, required node affinity, taints, GPU requests)
    with the class's scheduling merged in (runtime_class_nodes): a class without scheduling is fine on a cluster with
    nodes that lack the handler as long as every workload naming it is kept to the nodes that have it (the GPU
    Operator's RuntimeClass, whose operands select the operator's nvidia.com/gpu.deploy.* labels). A class whose
    scheduling.nodeSelector leaves out a GPU node is flagged too: no pod naming it runs there."""
    out = []
    classes = {get(o, "metadata.name"): o for o in c.of_kind("RuntimeClass")}
    for name, rc in sorted(classes.items()):
        handler = rc.get("handler")
        landing: dict[str, list[str]] = {}  # node without the handler -> the workloads that can land there
        for w in c.workloads:
            if w.spec.get("runtimeClassName") != name:
                continue
            for n in runtime_class_nodes(w, rc, c.nodes):
                if n.handlers is not None and handler not in n.handlers:
                    landing.setdefault(n.name, []).append(w.id)
        selector = get(rc, "scheduling.nodeSelector") or {}
        for n in c.nodes:
            if n.name in landing:
                hint = ("; it has no GPUs: keep them off it (a GPU request, a nodeSelector or required affinity on a label only GPU "
                        "nodes carry, or the RuntimeClass's scheduling.nodeSelector)") if not n.gpus else ""
                out.append(Violation("runtime", obj_id(rc), RUNTIME_KEY,
                                     f"handler {handler!r} is not configured on node {n.name} (its runtime has {', '.join(sorted(n.handlers))}), "
                                     f"where {', '.join(sorted(landing[n.name]))} can run{hint}"))
            elif n.gpus and selector and not all(str(n.labels.get(k)) == str(v) for k, v in selector.items()):
                out.append(Violation("runtime", obj_id(rc), LABELS_KEY,
                                     f"scheduling.nodeSelector {selector} does not select GPU node {n.name}: pods with runtimeClassName {name} cannot run there"))
    for w in c.workloads:
        rcn = w.spec.get("runtimeClassName")
        if rcn and rcn not in classes:
            out.append(Violation("runtime", w.id, RUNTIME_DEFAULT_KEY, f"runtimeClassName {rcn!r} names no RuntimeClass in the plan"))
    return out


_GPU_LABEL_PREFIXES = ("nvidia.com/", "feature.node.kubernetes.io/pci-10de")


def rule_cpu_nodes(c: Cluster) -> list[Violation]:
    """A node without GPUs (its VM's vms[].gpus is empty: a CPU-only control plane) carries no GPU label
    (nvidia.com/*, NFD's pci-10de) and no GPU taint (nvidia.com/*), and no GPU DaemonSet (one that requests
    nvidia.com/* or selects GPU labels, or a chart's GPU operand) is placed on it: GPU pods scheduled there
    would stay Pending or crash without a driver, and the GPU label would count it as a GPU node.
    Assumes the node model above (labels from the kubernetes phase header, operator labels only with GPUs)."""
    out = []
    for n in c.nodes:
        if n.gpus:
            continue
        for label in sorted(k for k in n.labels if k.startswith(_GPU_LABEL_PREFIXES)):
            out.append(Violation("cpu-nodes", f"Node {n.name}", LABELS_KEY,
                                 f"has no GPUs (its VM's gpus list is empty) but gets the GPU label {label}={n.labels[label]}"))
        for t in n.taints:
            if t["key"].startswith("nvidia.com/"):
                out.append(Violation("cpu-nodes", f"Node {n.name}", TAINTS_KEY,
                                     f"has no GPUs (its VM's gpus list is empty) but gets the GPU taint {taint_text(t)}"))
        for w in c.workloads:
            if w.id.startswith("DaemonSet ") and _is_gpu_workload(w) and not labels_fit(w.spec, n) \
                    and not untolerated(w.spec.get("tolerations") or [], n.taints):
                out.append(Violation("cpu-nodes", w.id, LABELS_KEY,
                                     f"a GPU DaemonSet would run on node {n.name}, which has no GPUs; select GPU nodes (nvidia.com/gpu.present=true)"))
    return out


_NATIVE_QUOTA = re.compile(r"^(requests\.|limits\.)?(cpu|memory|ephemeral-storage|hugepages-[\w.]+)$|^(pods|services|secrets|configmaps|"
                           r"persistentvolumeclaims|replicationcontrollers|resourcequotas|services\.loadbalancers|services\.nodeports|"
                           r"requests\.storage)$|^count/.+$|^.+\.storageclass\.storage\.k8s\.io/(requests\.storage|persistentvolumeclaims)$")


def rule_quotas(c: Cluster) -> list[Violation]:
    """ResourceQuota keys are counted: for an extended resource only `requests.<resource>` (quota never counts
    `limits.<extended>` or the bare name, because extended resources cannot be overcommitted)."""
    out = []
    for o in c.of_kind("ResourceQuota"):
        ns = get(o, "metadata.namespace")
        idx = next((i for i, q in enumerate(c.cfg.addons.gpu_quotas) if q.namespace == ns), None)
        key = f"addons.gpuQuotas[{idx}]" if idx is not None else "addons.gpuQuotas"
        for k in sorted(get(o, "spec.hard", {}) or {}):
            if _NATIVE_QUOTA.match(k) or (k.startswith("requests.") and "/" in k):
                continue
            why = ("limits of extended resources are not counted by quota; use requests." + k[len("limits."):]) if k.startswith("limits.") \
                else "extended resources are counted only as requests.<resource>" if "/" in k else "not a resource quota key"
            out.append(Violation("quotas", obj_id(o), key, f"quota key {k!r}: {why}"))
    return out


def _image_repo(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def _registry_ok(repo: str, registry: str, overrides: Iterable[str]) -> bool:
    return repo.startswith(f"{registry}/") or repo in set(overrides)


def rule_images(c: Cluster) -> list[Violation]:
    """With addons.images.registry set, every image (manifest containers, chart image fields as modelled) comes
    from it, or from an explicit addons.images.overrides entry."""
    registry = c.cfg.addons.images.registry
    if not registry:
        return []
    overrides = c.cfg.addons.images.overrides.values()
    out = []
    for o in c.objects:
        if o.get("kind") not in WORKLOAD_KINDS:
            continue
        _, spec = _pod_template(o) or ({}, {})
        for ct in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            img = ct.get("image")
            if isinstance(img, str) and not _registry_ok(_image_repo(img), registry, overrides):
                out.append(Violation("images", obj_id(o), IMAGES_KEY, f"image {img} is not pulled from {registry}"))
    for r in c.releases:
        model = CHARTS.get(r.chart)
        for im in model.images if model else ():
            if not _enabled(r.effective, im.enabled):
                continue
            value = get(r.effective, im.path) or ""
            host = str(value).rstrip("/")
            ok = (host == registry or any(o.startswith(f"{host}/") for o in overrides)) if im.registry_only \
                else _registry_ok(str(value), registry, overrides)
            if not ok:
                out.append(Violation("images", r.id, IMAGES_KEY, f"{im.path} is {value or 'unset'!s}, not from {registry}"))
    return out


def rule_plan_known(c: Cluster) -> list[Violation]:
    """Objects only known at deploy time cannot be checked offline: that is a failure, not a pass."""
    return [Violation("plan", f"ConfigGroup {g}", "addons", "objects are unknown until deploy; the check cannot see them") for g in c.unknown_groups]


# --- custom resources and their CRDs ----------------------------------------


@dataclass(frozen=True)
class CrdSource:
    """The CustomResourceDefinitions one chart installs, as `<group>/<Kind>`, and where that list was read."""

    source: str
    crds: tuple[str, ...]
    enabled: tuple[str, ...] = ()  # values paths that must all be true (merged over CHARTS' defaults)


CRD_SOURCES: dict[str, CrdSource] = {
    # Since v3.32 the tigera-operator chart ships no CRDs: they are this chart, from the same Helm repo
    # (https://docs.tigera.io/calico/charts) at the same version; its render is manifests/v1_crd_projectcalico_org.yaml
    # (tests/reference/calico-v3.32.1.v1_crd_projectcalico_org.yaml, 32 CRDs; tests/test_convergence.py reads them).
    "crd.projectcalico.org.v1": CrdSource(
        "projectcalico/calico v3.32.1 charts/crd.projectcalico.org.v1/templates (= manifests/v1_crd_projectcalico_org.yaml)",
        tuple(f"operator.tigera.io/{k}" for k in (
            "APIServer", "GatewayAPI", "Goldmane", "ImageSet", "Installation", "Istio", "ManagementClusterConnection",
            "TigeraStatus", "Whisker"))
        + tuple(f"crd.projectcalico.org/{k}" for k in (
            "BGPConfiguration", "BGPFilter", "BGPPeer", "BlockAffinity", "CalicoNodeStatus", "ClusterInformation",
            "FelixConfiguration", "GlobalNetworkPolicy", "GlobalNetworkSet", "HostEndpoint", "IPAMBlock", "IPAMConfig",
            "IPAMHandle", "IPPool", "IPReservation", "KubeControllersConfiguration", "NetworkPolicy", "NetworkSet",
            "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy", "StagedNetworkPolicy", "Tier"))
        + ("policy.networking.k8s.io/ClusterNetworkPolicy",)),
    # No CRDs at v3.32.1 (charts/tigera-operator/ has only templates/). manageCRDs: true makes the operator create
    # them when its pod starts (tigera/operator v1.42.3 cmd/main.go, pkg/imports/crds Ensure): too late for this
    # release's own Installation/APIServer, which Helm maps to API kinds before it creates anything.
    "tigera-operator": CrdSource("projectcalico/calico v3.32.1 charts/tigera-operator/ (no crds/ directory)", ()),
    "kube-prometheus-stack": CrdSource(
        "prometheus-community/helm-charts kube-prometheus-stack 88.5.3 charts/crds/crds/ (prometheus-operator v0.93.1), "
        "installed with crds.enabled (default true)",
        tuple(f"monitoring.coreos.com/{k}" for k in (
            "Alertmanager", "AlertmanagerConfig", "PodMonitor", "Probe", "Prometheus", "PrometheusAgent",
            "PrometheusRule", "ScrapeConfig", "ServiceMonitor", "ThanosRuler")),
        ("crds.enabled",)),
    "gpu-operator": CrdSource(
        "NVIDIA/gpu-operator v26.7.0 deployments/gpu-operator/crds/ (Helm installs crds/ before the templates)",
        ("nvidia.com/ClusterPolicy", "nvidia.com/GPUCluster", "nvidia.com/NVIDIADriver",
         "resource.nvidia.com/ComputeDomain", "resource.nvidia.com/ComputeDomainClique")),
    "node-feature-discovery": CrdSource(
        "NVIDIA/gpu-operator v26.7.0 deployments/gpu-operator/charts/node-feature-discovery/crds/nfd-api-crds.yaml "
        "(the subchart of gpu-operator, with nfd.enabled)",
        ("nfd.k8s-sigs.io/NodeFeature", "nfd.k8s-sigs.io/NodeFeatureGroup", "nfd.k8s-sigs.io/NodeFeatureRule")),
}
_SUBCHART_CRDS = {"gpu-operator": (("node-feature-discovery", "nfd.enabled"),)}


@dataclass(frozen=True)
class ChartResource:
    """A custom resource a chart's templates render when the values paths are true."""

    api: str  # `<group>/<Kind>`
    name: str
    enabled: tuple[str, ...]


CHART_RESOURCES: dict[str, tuple[ChartResource, ...]] = {
    # projectcalico/calico v3.32.1 charts/tigera-operator/templates/crs/custom-resources.yaml
    # and configmap-felixconfiguration-templates.yaml
    "tigera-operator": (
        ChartResource("operator.tigera.io/Installation", "default", ("installation.enabled",)),
        ChartResource("operator.tigera.io/APIServer", "default", ("apiServer.enabled",)),
        ChartResource("operator.tigera.io/Goldmane", "default", ("goldmane.enabled",)),
        ChartResource("operator.tigera.io/Whisker", "default", ("whisker.enabled",)),
        ChartResource("crd.projectcalico.org/FelixConfiguration", "default", ("defaultFelixConfiguration.enabled",)),
    ),
    # NVIDIA/gpu-operator v26.7.0 deployments/gpu-operator/templates/clusterpolicy.yaml, gpucluster.yaml,
    # nvidiadriver.yaml, nodefeaturerules.yaml
    "gpu-operator": (
        ChartResource("nvidia.com/ClusterPolicy", "cluster-policy", ("clusterPolicy.deployCR",)),
        ChartResource("nvidia.com/GPUCluster", "default", ("gpuCluster.deployCR",)),
        ChartResource("nvidia.com/NVIDIADriver", "default", ("driver.enabled", "driver.nvidiaDriverCRD.enabled", "driver.nvidiaDriverCRD.deployDefaultCR")),
        ChartResource("nfd.k8s-sigs.io/NodeFeatureRule", "nvidia-kernel-modules", ("nfd.nodefeaturerules",)),
    ),
    # kube-prometheus-stack 88.5.3 templates/prometheus/prometheus.yaml, templates/alertmanager/alertmanager.yaml
    "kube-prometheus-stack": (
        ChartResource("monitoring.coreos.com/Prometheus", "prometheus", ("prometheus.enabled",)),
        ChartResource("monitoring.coreos.com/Alertmanager", "alertmanager", ("alertmanager.enabled",)),
    ),
}

PRESENT_CRDS: dict[str, tuple[str, ...]] = {kind: h.present_crds for kind, h in HYPERVISORS.items() if h.present_crds}
"""CRDs declared present, per hosts[].kind (each backend's present_crds): installed outside gpu-stack as a prerequisite."""

# API groups the API server serves itself: no CRD needed
_BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "rbac.authorization.k8s.io", "storage.k8s.io", "node.k8s.io",
                   "networking.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "discovery.k8s.io", "apiextensions.k8s.io",
                   "admissionregistration.k8s.io", "certificates.k8s.io", "flowcontrol.apiserver.k8s.io", "events.k8s.io",
                   "apiregistration.k8s.io", "resource.k8s.io", "authentication.k8s.io", "authorization.k8s.io"}


def api_of(obj: Mapping[str, Any]) -> str:
    """`<group>/<Kind>` (group "" for the core API); a pulumi-kubernetes `<Kind>Patch` resource is its kind's."""
    api_version = str(obj.get("apiVersion") or "")
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    kind = str(obj.get("kind") or "")
    if obj.get("_origin") == "resource" and kind.endswith("Patch"):
        kind = kind[:-len("Patch")]
    return f"{group}/{kind}"


def is_custom(api: str) -> bool:
    return api.split("/", 1)[0] not in _BUILTIN_GROUPS


def _crd_sources(objects: Iterable[Mapping[str, Any]], releases: Iterable[Release]) -> dict[str, list[tuple[str, str, str]]]:
    """`<group>/<Kind>` -> [(resource row, what installs it, key)] for every CRD the plan installs."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for o in objects:
        if o.get("kind") == "CustomResourceDefinition":
            api = f"{get(o, 'spec.group')}/{get(o, 'spec.names.kind')}"
            out.setdefault(api, []).append((o.get("_resource", ""), obj_id(o), "addons"))
    for r in releases:
        charts = [(r.chart, ())] + [(sub, (path,)) for sub, path in _SUBCHART_CRDS.get(r.chart, ())]
        for chart, paths in charts:
            src = CRD_SOURCES.get(chart)
            if src is None or not _enabled(r.effective, (*src.enabled, *paths)):
                continue
            for api in src.crds:
                out.setdefault(api, []).append((r.resource, f"{r.id} ({r.chart} {src.source.split(' ')[0]})", ""))
    return out


def _crds_installed(objects: Iterable[Mapping[str, Any]], releases: Iterable[Release]) -> set[str]:
    return set(_crd_sources(objects, releases))


def _dependencies(rows: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Resource name -> every resource it waits for: dependsOn, transitively; waiting for a component waits for its children."""
    rows = list(rows)
    direct = {r.get("name"): set((r.get("options") or {}).get("dependsOn") or []) for r in rows}
    children: dict[str, set[str]] = {}
    for r in rows:
        if r.get("parent"):
            children.setdefault(r["parent"], set()).add(r.get("name"))
    closed: dict[str, set[str]] = {}

    def walk(name: str) -> set[str]:
        if name in closed:
            return closed[name]
        closed[name] = seen = set()
        todo = list(direct.get(name, ()))
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            todo += list(direct.get(d, ())) + list(children.get(d, ()))
        return seen

    for name in direct:
        walk(name)
    return closed


def _crd_key(api: str, c: Cluster) -> str:
    group = api.split("/", 1)[0]
    if group in ("operator.tigera.io", "crd.projectcalico.org", "projectcalico.org", "policy.networking.k8s.io"):
        return POD_NETWORK_KEY
    if group == "monitoring.coreos.com":
        return MONITORING_KEY
    if group in ("nvidia.com", "resource.nvidia.com", "nfd.k8s-sigs.io"):
        return "addons.gpuOperator"
    return "addons"


def rule_crds(c: Cluster) -> list[Violation]:
    """Every custom resource the plan renders has its CustomResourceDefinition installed by the plan, before it.

    Custom resources: manifest and typed objects outside the API server's own groups, what the charts'
    templates render as far as CHART_RESOURCES models them (Calico's Installation and APIServer, the GPU
    Operator's ClusterPolicy, kube-prometheus-stack's Prometheus), and what the GPU Operator creates
    (its ServiceMonitors). The CRDs: CustomResourceDefinition objects of the plan, the charts of
    CRD_SOURCES (one table, each with the source it was read from) or CRDs declared present
    (PRESENT_CRDS: KubeVirt on a KubeVirt host cluster). A release or object group whose custom
    resources come from a CRD installed by another resource must wait for it (dependsOn): Helm and
    pulumi-kubernetes map every object to an API kind first, and fail on a kind the API server lacks.
    """
    installed = _crd_sources(c.objects, c.releases)
    present = {api for h in c.cfg.hosts for api in PRESENT_CRDS.get(h.kind, ())}
    deps = _dependencies(c.rows)
    wanted: list[tuple[str, str, str]] = []  # (object id, api, resource row that applies it; "" when an operator creates it)
    for o in c.objects:
        api = api_of(o)
        if o.get("kind") and is_custom(api):
            by_operator = "created by" in str(o.get("_origin"))
            wanted.append((obj_id(o), api, "" if by_operator else o.get("_resource", "")))
    for r in c.releases:
        for cr in CHART_RESOURCES.get(r.chart, ()):
            if _enabled(r.effective, cr.enabled):
                wanted.append((f"{r.id} {cr.api.split('/', 1)[1]} {cr.name}", cr.api, r.resource))
    out = []
    for what, api, row in wanted:
        if api in present:
            continue
        sources = installed.get(api, [])
        if not sources:
            out.append(Violation("crds", what, _crd_key(api, c),
                                 f"no CustomResourceDefinition for {api} is installed by the plan or declared present, "
                                 f"so the API server has no such kind (\"no matches for kind {api.split('/', 1)[1]}\")"))
            continue
        if not row or any(src == row or src in deps.get(row, set()) for src, _, _ in sources):
            continue
        out.append(Violation("crds", what, _crd_key(api, c),
                             f"the CRD for {api} comes from {', '.join(w for _, w, _ in sources)}, which {row} does not wait for (dependsOn)"))
    return out


SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
"""Created by the API server itself, so every cluster has them: kube-system, kube-public and kube-node-lease by the
system namespaces controller (kubernetes/kubernetes pkg/controlplane/controller/systemnamespaces/
system_namespaces_controller.go, given metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease),
default by the kubernetes Service's controller; docs/SOURCES.md, Kubernetes objects."""


def _declared_namespaces(cfg: StackConfig) -> tuple[set[str], dict[str, str]]:
    """(namespaces the config declares to exist already, namespace -> the config key that decides whether the plan creates it)."""
    declared: set[str] = set()
    backend_keys: dict[str, str] = {}
    for h in HYPERVISORS.values():
        more, more_keys = h.declared_namespaces(cfg)
        declared |= more
        for ns, key in more_keys.items():
            backend_keys.setdefault(ns, key)
    declared |= {q.namespace for q in cfg.addons.gpu_quotas if not q.create_namespace}
    keys: dict[str, str] = {}
    for qi, q in enumerate(cfg.addons.gpu_quotas):
        keys.setdefault(q.namespace, f"addons.gpuQuotas[{qi}].createNamespace")
    for ns, key in backend_keys.items():
        keys.setdefault(ns, key)
    return declared, keys


def rule_namespaces(c: Cluster) -> list[Violation]:
    """Every namespaced object the plan puts on a cluster lands in a namespace that exists there: one the plan creates on
    the same cluster (a Namespace manifest or resource, a Helm release with createNamespace), one the API server creates
    (SYSTEM_NAMESPACES), or one the config declares to exist (a KubeVirt host's kubevirtNamespace, hosts[].kubevirt
    .namespace or addons.gpuQuotas[].namespace with createNamespace false). The API server refuses an object in a
    namespace that does not exist (NamespaceLifecycle admission). Clusters are told apart by the Kubernetes provider
    (resources.json `provider`): the KubeVirt host cluster's objects never count the guest cluster's namespaces.
    Assumes an object without metadata.namespace is cluster-scoped or lands in default; what charts and operators
    create is in their release's namespace, checked through the release."""
    declared, keys = _declared_namespaces(c.cfg)
    created: dict[str | None, set[str]] = {}
    for o in c.objects:
        if o.get("kind") == "Namespace" and "_cluster" in o:
            created.setdefault(o.get("_cluster"), set()).add(get(o, "metadata.name"))
    for rel in c.releases:
        if rel.creates_namespace:
            created.setdefault(rel.cluster, set()).add(rel.namespace)
    exists = lambda cluster, ns: ns in SYSTEM_NAMESPACES or ns in declared or ns in created.get(cluster, set())  # noqa: E731
    out: list[Violation] = []
    for o in c.objects:
        ns = get(o, "metadata.namespace")
        if "_cluster" not in o or not ns or exists(o.get("_cluster"), ns):
            continue
        out.append(Violation("namespaces", obj_id(o), keys.get(ns, "addons"),
                             f"namespace {ns} is neither created by the plan on this cluster ({o.get('_cluster')}) nor declared to exist"))
    for rel in c.releases:
        if not exists(rel.cluster, rel.namespace):
            out.append(Violation("namespaces", rel.id, keys.get(rel.namespace, "addons"),
                                 f"namespace {rel.namespace} is neither created by the plan on this cluster ({rel.cluster}) nor declared to exist, and the release does not set createNamespace"))
    return out


def _backend_rule(name: str, rule: Callable[[Cluster], list[tuple[str, str, str]]]) -> Callable[[Cluster], list[Violation]]:
    """A hypervisor backend's rule (hypervisors/<kind>/convergence.py): its (object, key, message) rows as Violations."""
    return lambda c: [Violation(name, obj, key, message) for obj, key, message in rule(c)]


BURNIN_JOB_PREFIX = "Job gpu-stack-burnin/"
CORDON_TAINT = {"key": "node.kubernetes.io/unschedulable", "value": "", "effect": "NoSchedule"}


def rule_burn_in(c: Cluster) -> list[Violation]:
    """Issue 27: every GPU node that burns in (render/burnin.node_plans) has its burn-in Jobs in the plan
    (manifests/burn-in/), and each Job pins that node (kubernetes.io/hostname), requests ALL its GPUs (GPUs x
    the time-slicing replicas the plugin's config gives; a one-GPU node whose plugin refuses requests above one
    asks for its one replica) and tolerates every NoSchedule/NoExecute taint of the node plus the cordon's
    node.kubernetes.io/unschedulable, because it runs before the node is uncordoned. Assumes the node model's
    taints (module docstring) are what the node carries while it burns in."""
    from render.burnin import node_plans

    plans = node_plans(c.cfg)
    out: list[Violation] = []
    _, replicas, _ = _gpu_resources(c)
    jobs = [w for w in c.workloads if w.id.startswith(BURNIN_JOB_PREFIX)]
    ts = c.cfg.addons.device_plugin.time_slicing if c.cfg.addons.device_plugin.enabled else None
    for node in c.nodes:
        if node.name not in plans:
            continue
        mine = [w for w in jobs if (w.spec.get("nodeSelector") or {}).get("kubernetes.io/hostname") == node.name]
        if not mine:
            out.append(Violation("burn-in", f"Node {node.name}", "burnIn.enabled", "burns in but the plan has no burn-in Job pinned to it (manifests/burn-in/)"))
            continue
        full = node.gpus * replicas
        allowed = {full} | ({1} if ts is not None and ts.fail_requests_greater_than_one and node.gpus == 1 else set())
        for w in mine:
            asked = sum(_gpu_requests(w.spec).values())
            if asked not in allowed:
                out.append(Violation("burn-in", w.id, "burnIn.enabled", f"requests {asked} of node {node.name}'s {full} GPUs: a burn-in must hold all of them"))
            missing = untolerated(w.spec.get("tolerations") or [], [*node.taints, CORDON_TAINT])
            if missing:
                out.append(Violation("burn-in", w.id, TAINTS_KEY,
                                     f"cannot run on node {node.name} before it is uncordoned: does not tolerate {', '.join(taint_text(t) for t in missing)}"))
    return out


RULES: tuple[tuple[str, Callable[[Cluster], list[Violation]]], ...] = (
    *((name, _backend_rule(name, rule)) for h in HYPERVISORS.values() for name, rule in h.convergence_rules),
    ("namespaces", rule_namespaces),
    ("scheduling", rule_scheduling),
    ("networking", rule_networking),
    ("crds", rule_crds),
    ("storage", rule_storage),
    ("scraping", rule_scraping),
    ("targets", rule_targets),
    ("dashboards", rule_dashboards),
    ("runtime", rule_runtime),
    ("cpu-nodes", rule_cpu_nodes),
    ("quotas", rule_quotas),
    ("images", rule_images),
    ("plan", rule_plan_known),
    ("burn-in", rule_burn_in),
)


def check(plan: Plan, cfg: StackConfig, rules: Iterable[str] | None = None) -> list[Violation]:
    """All violations of the whole plan, rule by rule, in a stable order. `rules`: a subset of RULES' names."""
    cluster = build_cluster(plan, cfg)
    wanted = set(rules) if rules is not None else None
    out: list[Violation] = []
    for name, rule in RULES:
        if wanted is None or name in wanted:
            out += rule(cluster)
    return out
