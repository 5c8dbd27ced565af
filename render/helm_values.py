"""Helm values for the three charts, as plain dicts.

Every path set here exists in the pinned chart's default values
(tests/reference/), which tests/test_addons.py checks: a typo
such as `dcgmExporter.servicemonitor` is silently ignored by Helm.
"""

from __future__ import annotations

from typing import Any

import yaml

from render.images import repository, split_repository
from stacks.config import Addons, Guest, Monitoring

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
NODE_RELABELING = {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}
DCGM_COUNTERS_CONFIGMAP = "gpu-stack-dcgm-counters"


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
            "config": {"name": DCGM_COUNTERS_CONFIGMAP},
            "serviceMonitor": {
                "enabled": addons.monitoring.enabled,
                "additionalLabels": monitor_labels,
                "relabelings": [dict(NODE_RELABELING)],
            },
        },
        "migManager": {"enabled": op.mig_manager_enabled, **repo("nvcr.io/nvidia/cloud-native/k8s-mig-manager")},
    }
    if op.mig_strategy != "none":
        values["mig"] = {"strategy": op.mig_strategy}
    if images.pull_secret:
        values["operator"]["imagePullSecrets"] = [images.pull_secret]
    return values


def monitoring_values(monitoring: Monitoring, addons: Addons, grafana_secret: str) -> dict[str, Any]:
    select_by_release = monitoring.service_monitor_selector_nil_uses_helm_values
    spec: dict[str, Any] = {
        "serviceMonitorSelectorNilUsesHelmValues": select_by_release,
        "podMonitorSelectorNilUsesHelmValues": select_by_release,
        "ruleSelectorNilUsesHelmValues": select_by_release,
        "retention": monitoring.retention,
        "storageSpec": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{monitoring.storage_gib}Gi"}},
            **({"storageClassName": monitoring.storage_class} if monitoring.storage_class else {}),
        }}},
    }
    values: dict[str, Any] = {
        "prometheus": {"prometheusSpec": spec},
        "grafana": {
            "admin": {"existingSecret": grafana_secret, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1"}},
        },
    }
    if addons.images.registry:
        values["global"] = {"imageRegistry": addons.images.registry}
    if addons.images.pull_secret:
        values.setdefault("global", {})["imagePullSecrets"] = [{"name": addons.images.pull_secret}]
    return values
