"""PodNetwork: Calico through Tigera's operator chart, so a cluster this stack creates gets Ready nodes.

`kubeadm init --pod-network-cidr` installs no CNI: without one every node stays
NotReady and every add-on Pending. Mode init only; the IP pool is
kubernetes.podCidr. Every other add-on depends on this release.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from render.helm_values import pod_network_values
from stacks.config import Addons, Kubernetes

CHART_REPO = "https://docs.tigera.io/calico/charts"
CHART = "tigera-operator"
RELEASE_NAME = "calico"
NAMESPACE = "tigera-operator"


@dataclass(frozen=True)
class PodNetworkArgs:
    addons: Addons
    kubernetes: Kubernetes
    nodes: int
    provider: k8s.Provider
    after: list[pulumi.Resource]


class PodNetwork(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: PodNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:PodNetwork", name, None, opts)
        pn = args.addons.pod_network
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE_NAME,
            chart=CHART,
            version=pn.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            namespace=NAMESPACE,
            create_namespace=True,
            values=pod_network_values(args.addons, args.kubernetes, args.nodes),
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.after),
        )
        self.register_outputs({"chart": CHART, "version": pn.version, "podCidr": args.kubernetes.pod_cidr})
