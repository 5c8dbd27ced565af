"""GpuQuotas: per-namespace GPU ResourceQuota and LimitRange (seed 004)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from render.k8s_manifests import gpu_quota
from config.models import GpuQuota


class GpuQuotas(pulumi.ComponentResource):
    def __init__(self, name: str, quotas: tuple[GpuQuota, ...], provider: k8s.Provider, after: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:GpuQuotas", name, None, opts)
        for quota in quotas:
            k8s.yaml.v2.ConfigGroup(f"{name}-{quota.namespace}", objs=gpu_quota(quota),
                                    opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=after))
        self.register_outputs({"namespaces": [q.namespace for q in quotas]})
