"""The optional in-cluster drift check (addons.monitoring.driftCheck, off by default; docs/OPERATIONS.md, Drift).

A DaemonSet, not a CronJob: a CronJob starts one pod on whichever node the scheduler picks, and one Job
per node needs a node list fixed at `pulumi up` that does not follow a node added or replaced later; a
DaemonSet keeps exactly one pod on every node its selector and tolerations allow (the GPU nodes,
GPU_NODE_SELECTOR and the nvidia.com/gpu taint), so it converges as the fleet changes, and the
convergence check (convergence/analysis.py rule_scheduling) sees it placed like the other GPU DaemonSets.

Each pod runs render/drift-check.sh in busybox (pinned, through addons.images like every add-on image)
with a `kubectl proxy` sidecar (registry.k8s.io/kubectl, the image Kubernetes publishes with every release from 1.28 on,
kubernetes PR 116672 and kubernetes/sig-release PR 2260), tagged with the cluster's own kubernetes.version: kubectl is
supported within one minor version of kube-apiserver, older or newer (kubernetes.io/releases/version-skew-policy,
"kubectl"), so a fixed tag would fall out of that window as the cluster is upgraded; the same version is what kubeadm
installs (mode init) or what the stack declares the cluster runs (join, existing). Older than 1.28 there is no such
image, and stacks/checks.py refuses the drift check there. So the Node is read over the API server's verified TLS with a ServiceAccount
that may only get nodes. The result is the gauge gpu_stack_node_drift, served by busybox httpd on
DRIFT_PORT and scraped through a PodMonitor labelled like every monitor gpu-stack makes
(render/helm_values.monitor_labels). Why not the other two ways a value reaches this Prometheus:
kube-prometheus-stack 88.5.3 runs node-exporter with no textfile directory
(tests/reference/kube-prometheus-stack-88.5.3.values.yaml, prometheus-node-exporter.extraArgs: the two
filesystem excludes only), and has no Pushgateway; it does select PodMonitors
(prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues: true, podMonitorSelector: {}, i.e. those
labelled release: <releaseName>). Prometheus 3 refuses a scrape whose Content-Type it cannot read
unless fallbackScrapeProtocol says what to assume (PodMonitor spec, prometheus-operator v0.93.1 CRD,
tests/reference/crd-podmonitors.yaml); busybox httpd serves .txt as text/plain, and the PodMonitor names
PrometheusText0.0.4 for either case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from render.helm_values import GPU_NODE_SELECTOR, GPU_TOLERATION, NODE_RELABELING
from render.images import image
from config.models import Addons

SCRIPT = Path(__file__).with_name("drift-check.sh")
NAME = "gpu-stack-drift-check"
PORT = 9410
BUSYBOX_IMAGE = ("docker.io/library/busybox", "1.37.0")
KUBECTL_REPOSITORY = "registry.k8s.io/kubectl"
"""Only its `kubectl proxy` is used; the tag follows kubernetes.version (kubectl_image_tag)."""
KUBECTL_IMAGE_SINCE = (1, 28)
"""The first minor registry.k8s.io/kubectl is published for (kubernetes PR 116672; kubernetes/sig-release PR 2260:
"Starting 1.28, a standalone image for kubectl will be released as part of the official images")."""
ALERT = "GpuStackNodeDrift"
ALERT_FOR = "2h"
"""Longer than one node's rollout (upgrade-check records the new plan before the node is drained and upgraded), so a
wave in progress does not page; a node left half-upgraded does, which is what gpu-operator users hit (issues 2509, 2166)."""


def kubectl_image_tag(kubernetes_version: str) -> str:
    """registry.k8s.io/kubectl's tag for a cluster at `kubernetes_version` (1.36.5 -> v1.36.5): the release's own kubectl,
    within the ±1 minor skew kubectl is supported at (kubernetes.io/releases/version-skew-policy/#kubectl)."""
    return f"v{kubernetes_version}"


def drift_check_script() -> str:
    return SCRIPT.read_text()


def drift_check_objects(addons: Addons, ns: str, monitor_labels: dict[str, Any], os_family: str, fabricmanager_package: str | None,
                        kubernetes_version: str) -> list[dict[str, Any]]:
    """ServiceAccount, read-only RBAC, the script's ConfigMap, the DaemonSet and its PodMonitor; the kubectl sidecar's tag
    from kubernetes_version (kubernetes.version)."""
    dc = addons.monitoring.drift_check
    labels = {"app.kubernetes.io/name": NAME}
    pull = {"imagePullSecrets": [{"name": addons.images.pull_secret}]} if addons.images.pull_secret else {}
    env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "DRIFT_FAMILY", "value": os_family},
           {"name": "DRIFT_FM_PACKAGE", "value": fabricmanager_package or ""},
           {"name": "DRIFT_INTERVAL", "value": str(dc.interval_seconds)},
           {"name": "DRIFT_PORT", "value": str(PORT)}]
    # nothing it reads needs root: /sys/module/nvidia/version, the dpkg database and /proc/driver/nvidia/gpus/*/information
    # are world-readable; it mounts only those host paths, never the host's root (kubelet credentials, keys)
    readonly = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsUser": 65534,
                "capabilities": {"drop": ["ALL"]}}
    host_paths = [("sys-module", "/sys/module")] + ([("dpkg", "/var/lib/dpkg")] if os_family == "ubuntu" else [])
    pod_spec: dict[str, Any] = {
        "serviceAccountName": NAME,
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(GPU_TOLERATION)],
        "containers": [
            {"name": "check", "image": image(addons.images, *BUSYBOX_IMAGE), "command": ["sh", "/etc/drift-check/drift-check.sh"],
             "env": env, "ports": [{"name": "metrics", "containerPort": PORT}],
             "securityContext": readonly,
             "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
             "volumeMounts": [{"name": "script", "mountPath": "/etc/drift-check", "readOnly": True},
                              *({"name": n, "mountPath": f"/host{path}", "readOnly": True} for n, path in host_paths),
                              {"name": "www", "mountPath": "/www"}]},
            {"name": "kubectl-proxy", "image": image(addons.images, KUBECTL_REPOSITORY, kubectl_image_tag(kubernetes_version)),
             "args": ["proxy", "--address=127.0.0.1", f"--port={8001}", "--accept-paths=^/api/v1/nodes/[^/]+$",
                      "--reject-methods=^(POST|PUT|PATCH|DELETE)$"],
             "securityContext": readonly,
             "resources": {"requests": {"cpu": "5m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}},
        ],
        "volumes": [{"name": "script", "configMap": {"name": NAME}},
                    *({"name": n, "hostPath": {"path": path, "type": "Directory"}} for n, path in host_paths),
                    {"name": "www", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        **pull,
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": ns, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": NAME, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": ns, "labels": labels},
         "data": {"drift-check.sh": drift_check_script()}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": NAME, "namespace": ns, "labels": labels},
         "spec": {"selector": {"matchLabels": labels}, "updateStrategy": {"type": "RollingUpdate"},
                  "template": {"metadata": {"labels": labels}, "spec": pod_spec}}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
         "metadata": {"name": NAME, "namespace": ns, "labels": {**labels, **monitor_labels}},
         "spec": {"selector": {"matchLabels": labels}, "fallbackScrapeProtocol": "PrometheusText0.0.4",
                  "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics.txt", "interval": "60s",
                                           "relabelings": [dict(NODE_RELABELING)]}]}},
    ]


def drift_alert_group() -> dict[str, Any]:
    """The rule group of the PrometheusRule (render/gpu_alerts.prometheus_rule) when the drift check is on."""
    return {"name": "gpu-stack.drift", "rules": [{
        "alert": ALERT,
        "expr": "max by (node, component, expected, actual) (gpu_stack_node_drift) == 1",
        "for": ALERT_FOR,
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "{{ $labels.node }}: {{ $labels.component }} is {{ $labels.actual }}, gpu-stack planned {{ $labels.expected }}",
            "description": "The node runs another version (or fewer of its GPUs) than gpu-stack recorded on it. "
                           "Run `make doctor STACK=<stack>` for the fix (docs/OPERATIONS.md, Drift).",
        },
    }]}
