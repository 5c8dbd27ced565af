"""LocalPathStorage: rancher/local-path-provisioner as the default StorageClass of a cluster this stack creates.

A kubeadm cluster has no StorageClass, so Prometheus's claim would stay
Pending. The provisioner's pinned release manifest (render/upstream/) is
applied as objects; its class `local-path` is marked default and named
explicitly in Prometheus's volumeClaimTemplate.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from render.helm_values import LOCAL_PATH_CLASS, LOCAL_PATH_VERSION
from render.k8s_manifests import local_path_storage
from config.models import Addons


class LocalPathStorage(pulumi.ComponentResource):
    objects: k8s.yaml.v2.ConfigGroup

    def __init__(self, name: str, addons: Addons, provider: k8s.Provider, after: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:LocalPathStorage", name, None, opts)
        self.objects = k8s.yaml.v2.ConfigGroup(
            f"{name}-objects", objs=local_path_storage(addons),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=after),
        )
        self.register_outputs({"storageClass": LOCAL_PATH_CLASS, "version": LOCAL_PATH_VERSION})
