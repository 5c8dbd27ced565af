"""DevicePlugin: the standalone NVIDIA k8s-device-plugin, by Helm chart or as a static DaemonSet.

The static form exists for clusters the chart no longer supports; seed 001
ran plugin 0.11 on Kubernetes 1.23 from a plain manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from render.helm_values import device_plugin_values
from render.k8s_manifests import device_plugin_static
from config.models import Addons, Guest

CHART_REPO = "https://nvidia.github.io/k8s-device-plugin"


@dataclass(frozen=True)
class DevicePluginArgs:
    addons: Addons
    guest: Guest | None
    runtime_class_name: str | None
    provider: k8s.Provider
    after: list[pulumi.Resource]


class DevicePlugin(pulumi.ComponentResource):
    ready: pulumi.Resource

    def __init__(self, name: str, args: DevicePluginArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:DevicePlugin", name, None, opts)
        dp = args.addons.device_plugin
        child = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.after)
        if dp.deploy == "helm":
            self.ready = k8s.helm.v3.Release(
                f"{name}-release",
                name="nvidia-device-plugin",
                chart="nvidia-device-plugin",
                version=dp.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
                namespace=dp.namespace,
                create_namespace=True,
                values=device_plugin_values(args.addons, args.guest),
                timeout=600,
                opts=child,
            )
        else:
            self.ready = k8s.yaml.v2.ConfigGroup(f"{name}-objects", objs=device_plugin_static(args.addons, args.runtime_class_name), opts=child)
        self.register_outputs({"deploy": dp.deploy, "version": dp.version})
