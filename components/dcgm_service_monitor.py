"""DcgmServiceMonitor: DCGM metrics reach Prometheus, with alerts and a dashboard.

It owns the rule that broke seed 000: the `release` label on every
ServiceMonitor and PrometheusRule comes from the MonitoringStack's Helm
release, never typed by hand. The GPU Operator's exporter gets the labels
through `release_labels()`; on the device plugin path this component also
deploys a standalone dcgm-exporter with our counters file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from components.monitoring_stack import MonitoringStack
from render.gpu_alerts import dashboard_configmap, prometheus_rule
from render.k8s_manifests import dcgm_exporter_standalone, namespace
from stacks.config import Addons

STANDALONE_NAMESPACE = "gpu-monitoring"


def release_labels(monitoring: MonitoringStack) -> pulumi.Output[dict[str, str]]:
    """The labels kube-prometheus-stack selects monitors and rules by."""
    return monitoring.release_name.apply(lambda name: {"release": name})


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


class DcgmServiceMonitor(pulumi.ComponentResource):
    def __init__(self, name: str, args: DcgmServiceMonitorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:DcgmServiceMonitor", name, None, opts)
        labels = release_labels(args.monitoring)
        objs = labels.apply(lambda lab: [
            prometheus_rule(args.monitoring.namespace, lab, args.expected_gpus, args.fabric_nodes),
            dashboard_configmap(args.monitoring.namespace),
            *([namespace(STANDALONE_NAMESPACE), *dcgm_exporter_standalone(args.addons, STANDALONE_NAMESPACE, args.runtime_class_name, lab)]
              if args.mode == "standalone" else []),
        ])
        # the monitoring release installs the ServiceMonitor and PrometheusRule CRDs
        self.objects = k8s.yaml.v2.ConfigGroup(
            f"{name}-objects",
            objs=objs,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider,
                                        depends_on=[args.monitoring.release, *args.after]),
        )
        self.register_outputs({"labels": labels})
