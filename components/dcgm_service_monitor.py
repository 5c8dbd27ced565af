"""DcgmServiceMonitor: DCGM metrics reach Prometheus, with alerts and a dashboard.

It owns the rule that broke seed 000: the `release` label on every
ServiceMonitor and PrometheusRule is the MonitoringStack's release name,
never typed by hand (render/helm_values.monitor_labels, from
addons.monitoring.releaseName, which names the Release). The GPU Operator's
exporter gets the same labels; on the device plugin path this component also
deploys a standalone dcgm-exporter with our counters file. The labels are
plain values, so the manifests are known in `pulumi preview`; the objects wait
for the release (its CRDs) through depends_on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from components.monitoring_stack import MonitoringStack
from render.gpu_alerts import dashboard_configmap, prometheus_rule
from render.k8s_manifests import dcgm_exporter_standalone, namespace
from config.models import Addons

STANDALONE_NAMESPACE = "gpu-monitoring"


@dataclass(frozen=True)
class DcgmServiceMonitorArgs:
    mode: Literal["operator", "standalone"]
    addons: Addons
    monitoring: MonitoringStack
    expected_gpus: dict[str, int]
    runtime_class_name: str | None
    provider: k8s.Provider
    after: list[pulumi.Resource]
    fabric_nodes: tuple[str, ...] = ()
    extra_objects: tuple[dict, ...] = ()
    """Applied with the rule (the optional drift check, render/drift_check.py); they need the release's CRDs too."""
    extra_groups: tuple[dict, ...] = ()
    """Rule groups added to the PrometheusRule (render/drift_check.drift_alert_group)."""


class DcgmServiceMonitor(pulumi.ComponentResource):
    def __init__(self, name: str, args: DcgmServiceMonitorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:DcgmServiceMonitor", name, None, opts)
        labels = args.monitoring.labels
        objs = [
            prometheus_rule(args.monitoring.namespace, labels, args.expected_gpus, args.fabric_nodes,
                            extra_groups=args.extra_groups),
            dashboard_configmap(args.monitoring.namespace),
            *([namespace(STANDALONE_NAMESPACE), *dcgm_exporter_standalone(args.addons, STANDALONE_NAMESPACE, args.runtime_class_name, labels)]
              if args.mode == "standalone" else []),
            *args.extra_objects,
        ]
        # the monitoring release installs the ServiceMonitor and PrometheusRule CRDs
        self.objects = k8s.yaml.v2.ConfigGroup(
            f"{name}-objects",
            objs=objs,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider,
                                        depends_on=[args.monitoring.release, *args.after]),
        )
        self.register_outputs({"labels": labels})
