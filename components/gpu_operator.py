"""GpuOperator: NVIDIA GPU Operator, with what gpu-stack already did on the hosts turned off.

driver.enabled and toolkit.enabled are derived: false when GpuGuestBootstrap
installed them. devicePlugin.enabled is false when the standalone
DevicePlugin runs (the config refuses both). The DCGM exporter's
ServiceMonitor carries the MonitoringStack's release label (a plain value
from config, render/helm_values.monitor_labels, so the values are known in
`pulumi preview`), and the release's CRDs must exist first (depends_on).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from render.helm_values import gpu_operator_values
from render.k8s_manifests import dcgm_counters_configmap, namespace
from config.models import Addons, Guest

CHART_REPO = "https://helm.ngc.nvidia.com/nvidia"


@dataclass(frozen=True)
class GpuOperatorArgs:
    addons: Addons
    guest: Guest | None
    monitor_labels: dict[str, str]
    """render/helm_values.monitor_labels: plain, never another resource's output."""
    provider: k8s.Provider
    after: list[pulumi.Resource]
    """The MonitoringStack (for its CRDs) and the nodes."""


class GpuOperator(pulumi.ComponentResource):
    ready: pulumi.Resource

    def __init__(self, name: str, args: GpuOperatorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:GpuOperator", name, None, opts)
        op = args.addons.gpu_operator
        base = k8s.yaml.v2.ConfigGroup(
            f"{name}-objects",
            objs=[namespace(op.namespace), dcgm_counters_configmap(op.namespace)],
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.after),
        )
        self.ready = k8s.helm.v3.Release(
            f"{name}-release",
            name="gpu-operator",
            chart="gpu-operator",
            version=op.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            namespace=op.namespace,
            values=gpu_operator_values(args.addons, args.guest, args.monitor_labels),
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[base, *args.after]),
        )
        self.register_outputs({"version": op.version})
