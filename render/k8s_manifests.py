"""Kubernetes objects gpu-stack applies itself, as plain manifest dicts.

Validated in the tests against the Kubernetes JSON schemas (kubernetes-validate)
and, for monitoring.coreos.com objects, against the CRD schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from render.helm_values import (DCGM_COUNTERS_CONFIGMAP, GPU_NODE_SELECTOR, GPU_TOLERATION, LOCAL_PATH_CLASS, LOCAL_PATH_VERSION,
                                NODE_RELABELING, device_plugin_config)
from render.images import image, image_reference
from config.models import Addons, BurnIn, GpuQuota

COUNTERS_FILE = Path(__file__).with_name("dcgm-counters.csv")
LOCAL_PATH_MANIFEST = Path(__file__).with_name("upstream") / f"local-path-storage-{LOCAL_PATH_VERSION}.yaml"
LOCAL_PATH_HELPER_IMAGE = ("docker.io/library/busybox", "1.37.0")
"""The helper pod that creates and removes volume directories; upstream leaves it unpinned."""
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
RUNTIME_CLASS = "nvidia"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
"""The GPU nodes' label (kubernetes.nodeLabels default; GPU Feature Discovery sets it too)."""


def dcgm_counters() -> str:
    return COUNTERS_FILE.read_text()


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def runtime_class(node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    """Pods that need a GPU select containerd's `nvidia` handler (configured by NvidiaRuntime).

    node_selector: where only some nodes have the handler (a VM without GPUs has none), the GPU nodes'
    label as `scheduling.nodeSelector`: the RuntimeClass admission controller merges it into every pod
    that names the class, so such a pod never lands on a node without the handler (node.k8s.io/v1
    RuntimeClass.scheduling; kubernetes.io "Runtime Class", Scheduling).
    """
    rc: dict[str, Any] = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": RUNTIME_CLASS}, "handler": RUNTIME_CLASS}
    if node_selector:
        rc["scheduling"] = {"nodeSelector": dict(sorted(node_selector.items()))}
    return rc


def _pull_secrets(addons: Addons) -> dict[str, Any]:
    return {"imagePullSecrets": [{"name": addons.images.pull_secret}]} if addons.images.pull_secret else {}


def device_plugin_static(addons: Addons, runtime_class_name: str | None) -> list[dict[str, Any]]:
    """The plain DaemonSet for clusters the chart does not support (seed 001: plugin 0.11 on Kubernetes 1.23)."""
    dp = addons.device_plugin
    labels = {"name": "nvidia-device-plugin-ds"}
    env = [{"name": "FAIL_ON_INIT_ERROR", "value": str(dp.fail_on_init_error).lower()},
           {"name": "MIG_STRATEGY", "value": dp.mig_strategy}]
    mounts = [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}]
    volumes: list[dict[str, Any]] = [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins", "type": "Directory"}}]
    objects: list[dict[str, Any]] = []
    args: list[str] = []
    if dp.time_slicing is not None:
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "nvidia-device-plugin-config", "namespace": "kube-system"},
                        "data": {"config.yaml": yaml.safe_dump(device_plugin_config(addons), sort_keys=True)}})
        mounts.append({"name": "config", "mountPath": "/etc/nvidia-device-plugin"})
        volumes.append({"name": "config", "configMap": {"name": "nvidia-device-plugin-config"}})
        args = ["--config-file=/etc/nvidia-device-plugin/config.yaml"]
    container: dict[str, Any] = {
        "name": "nvidia-device-plugin-ctr",
        "image": image(addons.images, "nvcr.io/nvidia/k8s-device-plugin", f"v{dp.version}"),
        "env": env,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    if args:
        container["args"] = args
    pod_spec: dict[str, Any] = {
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(GPU_TOLERATION)],
        "priorityClassName": "system-node-critical",
        "containers": [container],
        "volumes": volumes,
        **_pull_secrets(addons),
    }
    if runtime_class_name:
        pod_spec["runtimeClassName"] = runtime_class_name
    objects.append({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": labels}, "updateStrategy": {"type": "RollingUpdate"},
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    })
    return objects


def dcgm_counters_configmap(ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": DCGM_COUNTERS_CONFIGMAP, "namespace": ns},
            "data": {"dcgm-metrics.csv": dcgm_counters()}}


def dcgm_exporter_standalone(addons: Addons, ns: str, runtime_class_name: str | None, monitor_labels: dict[str, Any]) -> list[dict[str, Any]]:
    """dcgm-exporter for the device plugin path (the GPU Operator brings its own)."""
    labels = {"app.kubernetes.io/name": "dcgm-exporter"}
    pod_spec: dict[str, Any] = {
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(GPU_TOLERATION)],
        "priorityClassName": "system-node-critical",
        "containers": [{
            "name": "dcgm-exporter",
            "image": image(addons.images, "nvcr.io/nvidia/k8s/dcgm-exporter", addons.monitoring.dcgm_exporter_image_tag),
            "args": ["-f", "/etc/dcgm-exporter/dcgm-metrics.csv"],
            "env": [{"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "ports": [{"name": "metrics", "containerPort": 9400}],
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
            "volumeMounts": [{"name": "counters", "mountPath": "/etc/dcgm-exporter"},
                             {"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources", "readOnly": True}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": 9400}, "initialDelaySeconds": 20},
        }],
        "volumes": [{"name": "counters", "configMap": {"name": DCGM_COUNTERS_CONFIGMAP}},
                    {"name": "pod-resources", "hostPath": {"path": "/var/lib/kubelet/pod-resources"}}],
        **_pull_secrets(addons),
    }
    if runtime_class_name:
        pod_spec["runtimeClassName"] = runtime_class_name
    return [
        dcgm_counters_configmap(ns),
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "dcgm-exporter", "namespace": ns, "labels": labels},
         "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dcgm-exporter", "namespace": ns, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "metrics", "port": 9400, "targetPort": 9400}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "dcgm-exporter", "namespace": ns, "labels": {**labels, **monitor_labels}},
         "spec": {"selector": {"matchLabels": labels},
                  "endpoints": [{"port": "metrics", "interval": "15s", "relabelings": [dict(NODE_RELABELING)]}]}},
    ]


def gpu_quota(quota: GpuQuota) -> list[dict[str, Any]]:
    """Seed 004: a namespace's GPUs capped by a ResourceQuota, containers defaulted by a LimitRange."""
    objects: list[dict[str, Any]] = [namespace(quota.namespace)] if quota.create_namespace else []
    objects += [
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu-quota", "namespace": quota.namespace},
         # quota counts extended resources as requests only: a limits.nvidia.com/gpu key is never counted
         "spec": {"hard": {"requests.nvidia.com/gpu": str(quota.gpus)}}},
        {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "gpu-limit-range", "namespace": quota.namespace},
         "spec": {"limits": [{"type": "Container",
                              "default": {"nvidia.com/gpu": str(quota.default_request)},
                              "defaultRequest": {"nvidia.com/gpu": str(quota.default_request)}}]}},
    ]
    return objects


def local_path_storage(addons: Addons) -> list[dict[str, Any]]:
    """rancher/local-path-provisioner's release manifest (render/upstream/, byte for byte), with:
    the images through the registry overrides, the helper pod's image pinned, the pull
    secret, and its StorageClass marked as the cluster's default."""
    objects = [o for o in yaml.safe_load_all(LOCAL_PATH_MANIFEST.read_text()) if o]
    for obj in objects:
        kind = obj["kind"]
        if kind == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            for container in pod["containers"]:
                upstream, tag = container["image"].rsplit(":", 1)
                container["image"] = image(addons.images, upstream, tag)
            pod.update(_pull_secrets(addons))
        elif kind == "StorageClass":
            if obj["metadata"]["name"] != LOCAL_PATH_CLASS:
                raise ValueError(f"{LOCAL_PATH_MANIFEST.name}: StorageClass {obj['metadata']['name']!r}, expected {LOCAL_PATH_CLASS!r}")
            obj["metadata"]["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
        elif kind == "ConfigMap":
            helper = yaml.safe_load(obj["data"]["helperPod.yaml"])
            for container in helper["spec"]["containers"]:
                container["image"] = image(addons.images, *LOCAL_PATH_HELPER_IMAGE)
            helper["spec"].update(_pull_secrets(addons))
            obj["data"]["helperPod.yaml"] = yaml.safe_dump(helper, sort_keys=False)
    return objects


SMOKE_NAMESPACE = "gpu-stack-smoke"
SMOKE_JOB = "gpu-smoke-test"


def smoke_test_job(addons: Addons, runtime_class_name: str | None, resource: str = "nvidia.com/gpu") -> list[dict[str, Any]]:
    """One GPU, the GPU toleration (seed 001's test pod), nvidia-smi.

    Pulumi does not await the Job (skipAwait): the readiness gate waits for it after
    checking allocatable, so a failure names the seed 003 step instead of a bare timeout."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(GPU_TOLERATION)],
        "containers": [{"name": "nvidia-smi", "image": image_reference(addons.images, addons.images.smoke_test),
                        "command": ["nvidia-smi"], "resources": {"limits": {resource: "1"}}}],
        **_pull_secrets(addons),
    }
    if runtime_class_name:
        pod_spec["runtimeClassName"] = runtime_class_name
    return [
        namespace(SMOKE_NAMESPACE),
        {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": {"name": SMOKE_JOB, "namespace": SMOKE_NAMESPACE, "annotations": {"pulumi.com/skipAwait": "true"}},
         "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 900, "template": {"spec": pod_spec}}},
    ]



# --- the burn-in gate (issue 27; render/burnin.py, scripts/guest/burn-in.sh) --------------------------------

BURNIN_NAMESPACE = "gpu-stack-burnin"
BURNIN_NODE_LABEL = "gpu-stack.io/burn-in-node"
UNSCHEDULABLE_TOLERATION = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
"""`kubectl cordon` taints the node with this (TaintNodesByCondition); the burn-in runs while the node is cordoned."""
NCCL_TESTS_BIN = "/opt/nccl-tests/build/all_reduce_perf"
"""Where the nccl-tests image keeps it (FIELD-FACTS "Burn-in": AICR's EKS image, /opt/nccl-tests/build/)."""


def burnin_job_names(node: str) -> tuple[str, str]:
    """(dcgm Job, nccl Job) of a node: `burnin-<node>-dcgm`, `burnin-<node>-nccl`."""
    return f"burnin-{node}-dcgm", f"burnin-{node}-nccl"


def burnin_jobs(node: str, gpus: int, request: int, burn_in: BurnIn, addons: Addons, runtime_class_name: str | None,
                resource: str, node_taints: tuple = ()) -> list[dict[str, Any]]:
    """The node's burn-in Jobs, run one after the other by scripts/guest/burn-in.sh (kubectl apply):

    - `<node>-dcgm`: the GPU inventory (index, UUID, PCI address), `nvidia-smi topo -p2p r`, `dcgmi diag -r <level>`;
    - `<node>-nccl` (burnIn.nccl): nccl-tests all_reduce_perf over all the node's GPUs, 8 B to 1 GiB, NCCL_DEBUG=INFO.
    Each Pod requests ALL of the node's GPU resource (`request`), is pinned to the node (kubernetes.io/hostname),
    and tolerates the GPU taint, the configured node taints and the cordon (node.kubernetes.io/unschedulable),
    because it runs before the node is uncordoned. Sections are `--- name ---` lines (render/burnin.py reads them).
    """
    tolerations = [dict(GPU_TOLERATION), dict(UNSCHEDULABLE_TOLERATION)]
    for t in node_taints:
        tol = {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} if t.value else {"key": t.key, "operator": "Exists", "effect": t.effect}
        if tol not in tolerations:
            tolerations.append(tol)
    labels = {"app.kubernetes.io/name": "gpu-stack-burnin", BURNIN_NODE_LABEL: node}

    def job(name: str, container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": tolerations,
            "containers": [{**container, "resources": {"limits": {resource: str(request)}}}],
            **_pull_secrets(addons),
        }
        if volumes:
            pod_spec["volumes"] = volumes
        if runtime_class_name:
            pod_spec["runtimeClassName"] = runtime_class_name
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": BURNIN_NAMESPACE, "labels": dict(labels)},
                "spec": {"backoffLimit": 0, "activeDeadlineSeconds": burn_in.timeout_seconds,
                         "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec}}}

    dcgm_name, nccl_name = burnin_job_names(node)
    dcgm_script = "\n".join([
        "echo '--- gpus ---'",
        "nvidia-smi --query-gpu=index,uuid,pci.bus_id --format=csv,noheader",
        "echo '--- p2p ---'",
        "nvidia-smi topo -p2p r",
        "echo '--- dcgm ---'",
        "nv-hostengine >/dev/null 2>&1 || true",  # dcgmi talks to a host engine; the image's own (NVIDIA/DCGM docker/)
        f"dcgmi diag -r {burn_in.dcgm_level}",
        "echo \"--- end $? ---\"",
    ])
    objects = [namespace(BURNIN_NAMESPACE), job(dcgm_name, {"name": "dcgm", "image": image_reference(addons.images, burn_in.dcgm_image),
                                                           "command": ["bash", "-c", dcgm_script]}, [])]
    if burn_in.nccl and gpus > 1:
        nccl_script = "\n".join([
            "echo '--- nccl ---'",
            f"{NCCL_TESTS_BIN} -b 8 -e 1G -f 2 -g {gpus}",
            "echo \"--- end $? ---\"",
        ])
        objects.append(job(nccl_name, {"name": "nccl", "image": image_reference(addons.images, burn_in.nccl_image),
                                       "command": ["bash", "-c", nccl_script],
                                       "env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "NCCL_DEBUG_SUBSYS", "value": "INIT,P2P,SHM,NET"}],
                                       "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]},
                           [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]))  # NCCL's SHM transport outgrows the runtime's 64 MiB /dev/shm
    return objects
