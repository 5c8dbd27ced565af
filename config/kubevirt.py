"""The config of a `kind: kubevirt` host (hosts[].kubevirt) and of a VM on one (vms[].kubevirt).

On the ground floor with the other models: StackConfig and its JSON schema need them. The checks that span
fields are hypervisors/kubevirt/checks.py's.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from config.base import DeviceModelName, Model
from config.types import (
    DnsSubdomain,
    ImageUrl,
    ImageReference,
    IPv4,
    LabelValue,
    Name,
    QualifiedName,
    Word,
)


class KubevirtRootDisk(Model):
    """The VM's root disk: exactly one of `url`, `registry` and `containerDisk`."""

    url: Optional[ImageUrl] = None
    """Cloud image (qcow2/raw) imported by CDI into a DataVolume (dataVolumeTemplates, source http), sized vms[].diskGib."""
    registry: Optional[ImageReference] = None
    """Container image holding the disk image, imported by CDI into a DataVolume (source registry, docker://...)."""
    container_disk: Optional[ImageReference] = None
    """Ephemeral containerDisk image: nothing persists across a VMI restart, no storage class needed."""
    storage_class: Optional[DnsSubdomain] = None
    """StorageClass of the DataVolume (url/registry). Unset: the cluster's default class."""


class KubevirtSsh(Model):
    """How gpu-stack reaches the guest over SSH: a Service for the VMI (implemented) or a Multus network (refused: not implemented)."""

    via: Literal["service", "multus"] = "service"
    """service: a Service selecting the VMI (NodePort or LoadBalancer). multus: not implemented in this gpu-stack; refused by name."""
    service_type: Literal["NodePort", "LoadBalancer"] = "NodePort"
    """Type of the Service that exposes the guest's port 22."""
    node_port: Optional[int] = Field(default=None, ge=30000, le=32767)
    """NodePort: the fixed node port of the host's first VM (the kube-apiserver default range 30000-32767); the next VMs on this host get nodePort+1, +2, ...
    in vms order. Required for NodePort, so the SSH endpoint is known at preview."""
    address: Optional[IPv4] = None
    """NodePort: the address of a node reachable from where Pulumi runs (required). LoadBalancer: unset, the Service's load-balancer ingress address once assigned."""


class KubevirtDevicePlugins(Model):
    """Who advertises each device model as a node resource. A model in both lists is refused."""

    kubevirt: Optional[tuple[DeviceModelName, ...]] = None
    """Models advertised by KubeVirt's own device plugin (permittedHostDevices with externalResourceProvider false, as in seed 002): one device per IOMMU
    group. Unset: every model the VMs on this host use that gpuOperator does not list."""
    gpu_operator: tuple[DeviceModelName, ...] = ()
    """Models advertised by NVIDIA's sandbox device plugin through the GPU Operator (sandboxWorkloads, vfio-manager) on the host cluster: permittedHostDevices with externalResourceProvider true."""


class KubevirtHost(Model):
    namespace: Name
    """Namespace of the VirtualMachine, its DataVolume, cloud-init Secret and SSH Service on the host cluster."""
    create_namespace: bool = True
    """gpu-stack creates `namespace` on the host cluster (once, whatever the number of hosts and VMs in it; protected and kept on delete in production, since
    deleting a namespace deletes its VMs). false: the namespace is managed elsewhere and must exist before `pulumi up`. Hosts that share a namespace set
    the same value."""
    node_name: Optional[Name] = None
    """The node (its kubernetes.io/hostname label) the VM is bound to; host facts are that node's. Set this or nodeSelector."""
    node_selector: dict[QualifiedName, LabelValue] = Field(default_factory=dict)
    """Node selector of a labelled node pool instead of one node. Capacity is then predicted per host facts of one representative node only."""
    root_disk: KubevirtRootDisk
    ssh: KubevirtSsh = KubevirtSsh()
    manage_kubevirt_config: bool = Field(default=False, alias="manageKubeVirtConfig")
    """Patch the existing KubeVirt CR (server-side apply) with permittedHostDevices and the feature gates this gpu-stack needs. false: the CR is left alone
    and the convergence check only states what it must permit."""
    kubevirt_cr: Name = "kubevirt"
    """Name of the KubeVirt CR (one per cluster)."""
    kubevirt_namespace: Name = "kubevirt"
    """Namespace of the KubeVirt CR."""
    feature_gates: tuple[Word, ...] = ()
    """manageKubeVirtConfig: feature gates the cluster already has, kept. The CR's featureGates list is atomic, so the patch replaces it whole; gpu-stack adds HostDevices and Sidecar itself."""
    device_plugins: KubevirtDevicePlugins = KubevirtDevicePlugins()
    sidecar_image: ImageReference = "quay.io/kubevirt/sidecar-shim:v1.9.0"
    """Image of the hook sidecar that sets the 64-bit PCI hole (KubeVirt v1.9.0, like v1.8.4, has no size annotation); the shim of the pinned KubeVirt release."""


class VmKubevirt(Model):
    """KubeVirt-only settings of a VM on a `kind: kubevirt` host."""

    run_strategy: Literal["Always", "RerunOnFailure", "Manual", "Halted", "Once"] = "Always"
    """spec.runStrategy of the VirtualMachine."""
    dedicated_cpus: bool = False
    """domain.cpu.dedicatedCpuPlacement: pinned, exclusive host CPUs (the node's kubelet needs the static CPU manager policy)."""
    isolate_emulator_thread: bool = False
    """domain.cpu.isolateEmulatorThread: one more dedicated CPU for QEMU's emulator thread. Needs dedicatedCpus."""
    guest_numa: bool = False
    """domain.cpu.numa.guestMappingPassthrough: the guest sees the host NUMA of its pinned CPUs. Needs dedicatedCpus and numa.hugepages1g."""
