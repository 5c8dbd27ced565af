"""PodNetwork: Calico through Tigera's operator chart, so a cluster this stack creates gets Ready nodes.

`kubeadm init --pod-network-cidr` installs no CNI: without one every node stays
NotReady and every add-on Pending. Mode init only; the IP pool is
kubernetes.podCidr. Every other add-on depends on this release.

The tigera-operator chart has shipped no CRDs since Calico v3.32 (projectcalico/calico
v3.32.1 charts/tigera-operator/ has only templates/), yet its templates/crs/
custom-resources.yaml renders an operator.tigera.io/v1 Installation and APIServer:
without the CRDs the release fails with "no matches for kind Installation". Calico's
documented Helm procedure (tigera/docs calico_versioned_docs/version-3.32/getting-started/
kubernetes/helm.mdx; charts/crd.projectcalico.org.v1/README.md at v3.32.1) installs the
CRDs first with `helm template calico-crds projectcalico/crd.projectcalico.org.v1
--version <v> | kubectl apply --server-side -f -`. A helm.v4.Chart is that command:
it renders the chart client-side and applies each object with server-side apply
(pulumi-kubernetes 4.x's default), from the same chart repository and version as
the operator chart. The operator Release depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from render.helm_values import pod_network_values
from config.models import Addons, Kubernetes

CHART_REPO = "https://docs.tigera.io/calico/charts"
CHART = "tigera-operator"
RELEASE_NAME = "calico"
CRD_CHART = "crd.projectcalico.org.v1"
"""The CRD chart beside tigera-operator in CHART_REPO (operator.tigera.io/v1 and crd.projectcalico.org/v1)."""
CRD_RELEASE_NAME = "calico-crds"
NAMESPACE = "tigera-operator"


@dataclass(frozen=True)
class PodNetworkArgs:
    addons: Addons
    kubernetes: Kubernetes
    nodes: int
    provider: k8s.Provider
    after: list[pulumi.Resource]


class PodNetwork(pulumi.ComponentResource):
    crds: k8s.helm.v4.Chart
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: PodNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:PodNetwork", name, None, opts)
        pn = args.addons.pod_network
        # `helm template calico-crds ... | kubectl apply --server-side -f -`; the operator (manageCRDs: true,
        # the chart default, kept) re-applies the same CRDs when it starts and on upgrade
        self.crds = k8s.helm.v4.Chart(
            f"{name}-crds",
            name=CRD_RELEASE_NAME,
            chart=CRD_CHART,
            version=pn.version,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=CHART_REPO),
            # every object is a cluster-scoped CRD: no namespace (the operator's is created by its release)
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.after),
        )
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
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[*args.after, self.crds]),
        )
        self.register_outputs({"chart": CHART, "crdChart": CRD_CHART, "version": pn.version, "podCidr": args.kubernetes.pod_cidr})
