"""Helm values for the charts, as plain dicts.

Every path set here exists in the pinned chart's default values
(tests/reference/), which tests/test_addons.py checks: a typo
such as `dcgmExporter.servicemonitor` is silently ignored by Helm.
"""

from __future__ import annotations

from typing import Any

import yaml

from dataclasses import dataclass

from render.images import repository, split_repository
from config.models import Addons, Guest, Kubernetes, Monitoring

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
NODE_RELABELING = {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}
DCGM_COUNTERS_CONFIGMAP = "gpu-stack-dcgm-counters"
BURNIN_NODE_LABEL = "gpu-stack.io/burn-in"
"""passed or failed, set on the node by scripts/guest/burn-in.sh; exported by kube-state-metrics as kube_node_labels."""


def uses_runtime_class(guest: Guest | None) -> bool:
    """containerd with nvidia not the default runtime: GPU pods select it with runtimeClassName."""
    return guest is not None and guest.container_runtime.name == "containerd" and not guest.container_runtime.nvidia_default


def device_plugin_config(addons: Addons) -> dict[str, Any]:
    """The plugin's own config file (config.map.default)."""
    dp = addons.device_plugin
    config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": dp.mig_strategy, "failOnInitError": dp.fail_on_init_error}}
    if dp.time_slicing is not None:
        ts = dp.time_slicing
        config["sharing"] = {"timeSlicing": {
            "renameByDefault": ts.rename_by_default,
            "failRequestsGreaterThanOne": ts.fail_requests_greater_than_one,
            "resources": [{"name": "nvidia.com/gpu", "replicas": ts.replicas}],
        }}
    return config


def device_plugin_values(addons: Addons, guest: Guest | None) -> dict[str, Any]:
    dp = addons.device_plugin
    values: dict[str, Any] = {
        "image": {"repository": repository(addons.images, "nvcr.io/nvidia/k8s-device-plugin"), "tag": f"v{dp.version}"},
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(GPU_TOLERATION)],
        "priorityClassName": "system-node-critical",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "failOnInitError": dp.fail_on_init_error,
        "migStrategy": dp.mig_strategy,
        "config": {"map": {"default": yaml.safe_dump(device_plugin_config(addons), sort_keys=True)}, "default": "default"},
    }
    if uses_runtime_class(guest):
        values["runtimeClassName"] = "nvidia"
    if addons.images.pull_secret:
        values["imagePullSecrets"] = [{"name": addons.images.pull_secret}]
    return values


def monitor_labels(monitoring: Monitoring) -> dict[str, str]:
    """The labels Prometheus selects ServiceMonitors, PodMonitors and PrometheusRules by; {} without monitoring.

    With *SelectorNilUsesHelmValues (the default) kube-prometheus-stack 88.5.3
    selects `release: {{ $.Release.Name }}` (templates/prometheus/prometheus.yaml,
    convergence/analysis.py _prometheus_selectors), and the Release's name is
    addons.monitoring.releaseName, set explicitly (components/monitoring_stack.py).
    Derived from config, not from the Release's output: that output is unknown
    while the Release is being created, and Helm values or manifests built from
    it would show as one [unknown] in `pulumi preview` (issue 22 item 9).
    """
    return {"release": monitoring.release_name} if monitoring.enabled else {}


def gpu_operator_values(addons: Addons, guest: Guest | None, monitor_labels: dict[str, Any]) -> dict[str, Any]:
    """Driver and toolkit are off when gpu-stack's guest bootstrap installed them (never hand-set)."""
    op = addons.gpu_operator
    host_has_stack = guest is not None
    images = addons.images

    def repo(upstream: str) -> dict[str, str]:
        path, name = split_repository(repository(images, upstream))
        return {"repository": path, "image": name}

    values: dict[str, Any] = {
        "operator": repo("nvcr.io/nvidia/gpu-operator"),
        "validator": repo("nvcr.io/nvidia/gpu-operator"),
        "driver": {"enabled": not host_has_stack},
        "toolkit": {"enabled": not host_has_stack},
        "cdi": {"enabled": not host_has_stack},
        "devicePlugin": {"enabled": op.device_plugin_enabled, **repo("nvcr.io/nvidia/k8s-device-plugin")},
        "gfd": repo("nvcr.io/nvidia/k8s-device-plugin"),
        "dcgmExporter": {
            "enabled": True,
            **repo("nvcr.io/nvidia/k8s/dcgm-exporter"),
            "version": op.dcgm_exporter_version,
            "config": {"name": DCGM_COUNTERS_CONFIGMAP},
            "serviceMonitor": {
                "enabled": addons.monitoring.enabled,
                "additionalLabels": monitor_labels,
                "relabelings": [dict(NODE_RELABELING)],
            },
        },
        "migManager": {"enabled": op.mig_manager_enabled, **repo("nvcr.io/nvidia/cloud-native/k8s-mig-manager")},
    }
    if monitor_labels:
        # The operator's own metrics: it always creates Service and ServiceMonitor `gpu-operator` (gpu-operator
        # v26.7.0 assets/state-operator-metrics/), labelled only app: gpu-operator, so kube-prometheus-stack's
        # default selector (release: <name>) ignores it. The chart copies operator.metrics.serviceMonitor into
        # the ClusterPolicy (templates/clusterpolicy.yaml) and the operator merges its additionalLabels into the
        # ServiceMonitor's labels (controllers/object_controls.go applyServiceMonitorCustomEdits).
        values["operator"]["metrics"] = {"serviceMonitor": {"additionalLabels": monitor_labels}}
    if op.mig_strategy != "none":
        values["mig"] = {"strategy": op.mig_strategy}
    if images.pull_secret:
        values["operator"]["imagePullSecrets"] = [images.pull_secret]
    return values


LOCAL_PATH_CLASS = "local-path"
LOCAL_PATH_VERSION = "v0.0.37"
# kubeadm binds these to 127.0.0.1 on the node; Prometheus (a pod) can't reach them, so the
# chart's scrapes and their *Down alerts are switched off (docs/ARCHITECTURE.md, control-plane metrics)
CONTROL_PLANE_SCRAPES = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")


@dataclass(frozen=True)
class PrometheusStorage:
    """Where Prometheus keeps its data; never a claim that nothing can bind."""
    kind: str  # "class" (a named StorageClass), "default" (the cluster's default class), "emptyDir"
    storage_class: str | None
    install_local_path: bool
    """gpu-stack installs the local-path provisioner as the default class (mode init, no class named)."""

    def describe(self, gib: int) -> str:
        if self.kind == "emptyDir":
            return ("Prometheus data in an emptyDir (no claim: mode join/existing with no addons.monitoring.storageClass "
                    "and defaultStorageClassExists false; lost when the pod moves)")
        where = f"StorageClass {self.storage_class}" if self.storage_class else "the cluster's default StorageClass (declared)"
        made = f" (local-path-provisioner {LOCAL_PATH_VERSION} installed as the default class)" if self.install_local_path else ""
        return f"Prometheus claim {gib}Gi on {where}{made}"


def prometheus_storage(monitoring: Monitoring, kubernetes: Kubernetes | None) -> PrometheusStorage:
    creates_cluster = kubernetes is not None and kubernetes.mode == "init"
    if monitoring.storage_class:
        return PrometheusStorage("class", monitoring.storage_class, creates_cluster and monitoring.storage_class == LOCAL_PATH_CLASS)
    if creates_cluster:
        return PrometheusStorage("class", LOCAL_PATH_CLASS, True)
    if monitoring.default_storage_class_exists:
        return PrometheusStorage("default", None, False)
    return PrometheusStorage("emptyDir", None, False)


def monitoring_values(monitoring: Monitoring, addons: Addons, grafana_secret: str, storage: PrometheusStorage) -> dict[str, Any]:
    select_by_release = monitoring.service_monitor_selector_nil_uses_helm_values
    spec: dict[str, Any] = {
        "serviceMonitorSelectorNilUsesHelmValues": select_by_release,
        "podMonitorSelectorNilUsesHelmValues": select_by_release,
        "ruleSelectorNilUsesHelmValues": select_by_release,
        "retention": monitoring.retention,
    }
    if storage.kind != "emptyDir":
        spec["storageSpec"] = {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{monitoring.storage_gib}Gi"}},
            **({"storageClassName": storage.storage_class} if storage.storage_class else {}),
        }}}
    values: dict[str, Any] = {
        **{name: {"enabled": False} for name in CONTROL_PLANE_SCRAPES},
        "prometheus": {"prometheusSpec": spec},
        "grafana": {
            "admin": {"existingSecret": grafana_secret, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1"}},
        },
        # issue 27: the burn-in gate labels each node gpu-stack.io/burn-in=passed|failed (scripts/guest/burn-in.sh);
        # kube_node_labels carries no node label unless allowed (the kube-state-metrics subchart's
        # metricLabelsAllowlist defaults to [], "- namespaces=[k8s-label-1,k8s-label-n]" its example), and the
        # gpu_stack_burnin_* rules (render/gpu_alerts.py) read it as label_gpu_stack_io_burn_in
        "kube-state-metrics": {"metricLabelsAllowlist": [f"nodes=[{BURNIN_NODE_LABEL}]"]},
    }
    if addons.images.registry:
        values["global"] = {"imageRegistry": addons.images.registry}
    if addons.images.pull_secret:
        values.setdefault("global", {})["imagePullSecrets"] = [{"name": addons.images.pull_secret}]
    return values


CALICO_UPSTREAM = "quay.io/calico"
"""The operator's default registry and path for every Calico image (node, cni, typha, kube-controllers, ...)."""
TIGERA_OPERATOR_IMAGE = "quay.io/tigera/operator"


def calico_image_path(addons: Addons) -> tuple[str, str] | None:
    """(installation.registry, installation.imagePath) when images are not pulled from quay.io/calico.

    The operator takes one registry and path for all Calico images, so an override
    is keyed by quay.io/calico/node and must keep the image name (stacks/checks.py).
    """
    repo = repository(addons.images, f"{CALICO_UPSTREAM}/node")
    if repo == f"{CALICO_UPSTREAM}/node":
        return None
    path = repo.rsplit("/", 1)[0]
    registry, _, image_path = path.partition("/")
    return registry + "/", image_path


def pod_network_values(addons: Addons, kubernetes: Kubernetes, nodes: int) -> dict[str, Any]:
    """tigera-operator: Calico with one IP pool on kubernetes.podCidr (kubeadm's --pod-network-cidr)."""
    pn = addons.pod_network
    operator_registry, _, operator_image = repository(addons.images, TIGERA_OPERATOR_IMAGE).partition("/")
    installation: dict[str, Any] = {
        "enabled": True,
        "calicoNetwork": {"ipPools": [{
            "cidr": kubernetes.pod_cidr, "encapsulation": pn.encapsulation,
            "natOutgoing": "Enabled", "nodeSelector": "all()", "blockSize": 26,
        }]},
        # one VM: a second kube-controllers/apiserver replica would stay Pending
        "controlPlaneReplicas": min(nodes, 2),
    }
    values: dict[str, Any] = {
        "installation": installation,
        # the flow aggregator and its UI are not needed for a GPU node; fewer images to mirror
        "goldmane": {"enabled": False},
        "whisker": {"enabled": False},
        "tigeraOperator": {"registry": operator_registry, "image": operator_image},
    }
    custom = calico_image_path(addons)
    if custom is not None:
        installation["registry"], installation["imagePath"] = custom
        # the chart's calicoctl init container (OpenShift only) follows the same path
        values["calicoctl"] = {"image": f"{custom[0]}{custom[1]}/ctl"}
    if addons.images.pull_secret:
        installation["imagePullSecrets"] = [{"name": addons.images.pull_secret}]
    return values
