"""MonitoringStack: kube-prometheus-stack with a fixed release name and a Grafana admin secret.

The release name is set explicitly: helm.v3.Release appends a random suffix
otherwise, and Prometheus selects ServiceMonitors and rules by
`release: <name>`. Helm installs under exactly the name it is given, so
`release_name` and `labels` (render/helm_values.monitor_labels) come from the
config, plain values: built from the Release's output they would be unknown
in `pulumi preview` while the Release is created, and so would every Helm
value and manifest that carries them. Whatever needs the Release's CRDs
orders itself after `release` with depends_on.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from render.helm_values import PrometheusStorage, monitor_labels, monitoring_values
from config.models import Addons

CHART_REPO = "https://prometheus-community.github.io/helm-charts"
GRAFANA_SECRET = "gpu-stack-grafana-admin"


@dataclass(frozen=True)
class MonitoringStackArgs:
    addons: Addons
    grafana_admin_password: pulumi.Output[str]
    provider: k8s.Provider
    storage: PrometheusStorage
    """Where Prometheus keeps its data (render.helm_values.prometheus_storage)."""


class MonitoringStack(pulumi.ComponentResource):
    release_name: str
    labels: dict[str, str]
    """What Prometheus selects monitors and rules by (render/helm_values.monitor_labels)."""
    namespace: str
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: MonitoringStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:MonitoringStack", name, None, opts)
        cfg = args.addons.monitoring
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        # a component's dependsOn does not order its children: the first child carries it
        after = pulumi.ResourceOptions(depends_on=opts.depends_on) if opts is not None and opts.depends_on else None
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": cfg.namespace},
                                   opts=pulumi.ResourceOptions.merge(child, after))
        secret = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata={"name": GRAFANA_SECRET, "namespace": cfg.namespace},
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": args.grafana_admin_password},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[ns], additional_secret_outputs=["stringData", "data"])),
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=cfg.release_name,
            chart="kube-prometheus-stack",
            version=cfg.chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            namespace=cfg.namespace,
            values=monitoring_values(cfg, args.addons, GRAFANA_SECRET, args.storage),
            timeout=900,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[secret])),
        )
        self.release_name = cfg.release_name
        self.labels = monitor_labels(cfg)
        self.namespace = cfg.namespace
        self.register_outputs({"releaseName": self.release_name, "namespace": self.namespace})
