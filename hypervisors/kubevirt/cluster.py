"""The KubeVirt host cluster at preview: capacity from host facts, its provider, the KubeVirt CR patch, the VMs' Namespaces."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from config.errors import ConfigError
from config.models import Host, StackConfig
from facts.host_facts import HostFacts
from hypervisors.kubevirt import render as kv_render
from hypervisors.kubevirt.capacity import check_capacity, unchecked_hosts
from hypervisors.kubevirt.capacity import expected_allocatable as kubevirt_allocatable


def kubevirt_host_cluster(cfg: StackConfig, secrets: dict, hosts: list[Host], facts: dict[str, HostFacts]):
    """The host cluster's provider (gpu-stack:kubevirtKubeconfig, never the guest cluster's), the capacity check,
    the KubeVirt CR patch, and the VMs' Namespaces (by name).

    Capacity is checked before the provider is registered: a plan that asks for more devices
    than the node will advertise registers nothing. A Namespace is created once per namespace
    (hosts[].kubevirt.createNamespace); in production it is protected and kept on delete like
    the VMs, because deleting a namespace deletes every VM in it.
    """
    if not hosts:
        return None, (), {}
    problems = check_capacity(cfg, facts)
    if problems:
        raise ConfigError(problems)
    provider = k8s.Provider("kubevirt-host-cluster", kubeconfig=secrets["kubevirtKubeconfig"])
    after: tuple[pulumi.Resource, ...] = ()
    patch = kv_render.kubevirt_cr_patch(cfg, hosts)
    if patch is not None:
        after = (k8s.apiextensions.CustomResourcePatch(
            "kubevirt-config",
            api_version=patch["apiVersion"],
            kind=patch["kind"],
            metadata={**patch["metadata"], "annotations": {"pulumi.com/patchForce": "true"}},
            spec=patch["spec"],
            opts=pulumi.ResourceOptions(provider=provider),
        ),)
    keep = cfg.production
    namespaces = {
        doc["metadata"]["name"]: k8s.core.v1.Namespace(
            f"kubevirt-namespace-{doc['metadata']['name']}",
            metadata=doc["metadata"],
            # always kept on delete: pulumi-kubernetes' server-side apply adopts a namespace that was made by
            # hand before gpu-stack created it, and deleting a namespace deletes everything in it
            opts=pulumi.ResourceOptions(provider=provider, protect=keep, retain_on_delete=True),
        )
        for doc in kv_render.vm_namespaces(hosts)
    }
    allocatable = kubevirt_allocatable(cfg, facts)
    pulumi.export("kubevirtExpectedAllocatable", allocatable)
    unchecked = unchecked_hosts(cfg, facts)
    if unchecked:
        pulumi.export("kubevirtCapacity", f"unchecked on {', '.join(unchecked)}: no host facts (scripts/host-facts.sh on the node)")
        pulumi.log.warn(f"KubeVirt capacity unchecked on {', '.join(unchecked)}: no host facts, so the IOMMU groups that decide what KubeVirt advertises are unknown")
    return provider, after, namespaces
