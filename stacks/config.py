"""Typed config of one gpu-stack environment (`gpu-stack:*` in Pulumi.<stack>.yaml).

Validated once, before any resource is registered, so that a typo in a PCI
address fails the preview instead of half-building a VM. Single-field rules
live on the fields; rules that relate several fields live in stacks/checks.py,
which reports the exact key path of each problem.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from render.catalog import GPU_MODELS, NVSWITCH_MODELS
from stacks.types import CpuList, MacAddress, Name, PciAddress, Version3, parse_cpu_list

GpuModelName = Literal[tuple(GPU_MODELS)]  # type: ignore[valid-type]
NvSwitchModelName = Literal[tuple(NVSWITCH_MODELS)]  # type: ignore[valid-type]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


# --- hypervisor hosts -------------------------------------------------------


class NumaNode(Model):
    id: int = Field(ge=0)
    """Host NUMA node id, as in /sys/devices/system/node/nodeN."""
    cpus: CpuList
    """Host CPUs of this node (its cpulist), e.g. 0-47,96-143."""
    memory_gib: int = Field(gt=0)
    """Memory of this node in GiB."""

    @property
    def cpu_ids(self) -> tuple[int, ...]:
        return parse_cpu_list(self.cpus)


class HostFirmware(Model):
    code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    """OVMF code image on the host. Must be a non-Secure-Boot build (seed 000)."""
    vars_template: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    """NVRAM template copied per VM."""
    secure_boot: bool = False
    """Set true if `code` is a Secure Boot build (.secboot/.ms/.cc variants)."""


class BaseImage(Model):
    source: str
    """URL or host path of the cloud image (qcow2) the root disks are cloned from."""
    format: Literal["qcow2", "raw"] = "qcow2"


class Host(Model):
    name: Name
    libvirt_uri: str = Field(pattern=r"^qemu(\+[a-z]+)?://")
    """libvirt connection URI, e.g. qemu+ssh://root@gpu-host-1/system."""
    numa_nodes: tuple[NumaNode, ...] = Field(min_length=1)
    """The host's NUMA topology: `lscpu` / `numactl -H`."""
    reserved_cpus: CpuList = ""
    """Host CPUs never pinned to a VM (housekeeping, IRQs)."""
    reserved_memory_gib: int = Field(default=8, ge=0)
    """Memory kept for the host itself; VMs may not use it."""
    phys_addr_bits: int = Field(default=46, ge=36, le=57)
    """Physical address bits of the host CPU (`grep 'address sizes' /proc/cpuinfo`)."""
    storage_pool: str = "default"
    firmware: HostFirmware = HostFirmware()
    base_image: BaseImage

    @property
    def reserved_cpu_ids(self) -> tuple[int, ...]:
        return parse_cpu_list(self.reserved_cpus)


# --- VMs --------------------------------------------------------------------


class Gpu(Model):
    address: PciAddress
    """Host PCI address, `lspci -D` form: 0000:17:00.0."""
    model: GpuModelName
    """Catalog model; sets the BAR sizes used for the 64-bit MMIO window."""
    numa_node: Optional[int] = Field(default=None, ge=0)
    """Host NUMA node the GPU hangs off (/sys/bus/pci/devices/<addr>/numa_node). Required on multi-node hosts."""
    bar1_gib: Optional[float] = Field(default=None, gt=0)
    """Override the catalog BAR1 size (resizable BAR, unusual VBIOS)."""


class NvSwitch(Model):
    address: PciAddress
    model: NvSwitchModelName = "NVSwitch-Gen3"
    numa_node: Optional[int] = Field(default=None, ge=0)
    bar_mib: Optional[int] = Field(default=None, gt=0)


class VmNetwork(Model):
    name: str = "default"
    """libvirt network the NIC attaches to."""
    mac: Optional[MacAddress] = None
    """Fixed MAC. Unset: derived from stack and VM name, stable forever (seed 000 lost its DHCP lease when the MAC changed)."""
    address: Optional[str] = Field(default=None, pattern=r"^\d{1,3}(\.\d{1,3}){3}$")
    """The guest's IPv4 address when known (DHCP reservation for the MAC). Unset: the DHCP lease address."""
    wait_for_lease: bool = True


class VmFirmware(Model):
    allow_secure_boot_with_gpus: bool = False
    """Secure Boot firmware with GPUs gave seed 000 a black screen; refused unless set."""


class NumaCell(Model):
    host_node: int = Field(ge=0)
    vcpus: int = Field(gt=0)
    memory_gib: int = Field(gt=0)
    host_cpus: Optional[CpuList] = None
    """Host CPUs to pin this cell's vCPUs to, one each; must lie in host_node. Unset: allocated."""


class VmNuma(Model):
    host_nodes: Optional[tuple[int, ...]] = None
    """Host nodes the VM spans. Unset: the nodes its GPUs sit on."""
    cells: Optional[tuple[NumaCell, ...]] = None
    """Explicit guest cells; overrides host_nodes."""
    hugepages_1g: bool = Field(default=False, alias="hugepages1g")
    """Back guest memory with 1 GiB hugepages (reserve them on the host first)."""
    expose_gpu_affinity: bool = False
    """Put each GPU behind a pcie-expander-bus bound to its guest NUMA cell, so the guest (nvidia-smi topo -m, NCCL) sees GPU NUMA affinity."""


class Vm(Model):
    name: Name
    host: Name
    """Name of the entry in `hosts` this VM runs on."""
    vcpus: int = Field(gt=0, le=4096)
    memory_gib: int = Field(gt=0)
    disk_gib: int = Field(default=200, ge=20)
    network: VmNetwork = VmNetwork()
    gpus: tuple[Gpu, ...] = ()
    nvswitches: tuple[NvSwitch, ...] = ()
    firmware: VmFirmware = VmFirmware()
    numa: VmNuma = VmNuma()
    mmio_hole64_gib: Optional[int] = Field(default=None, gt=0)
    """Override the computed 64-bit PCI hole. Smaller than needed is an error."""
    kvm_hidden: Optional[bool] = None
    """Hide KVM from the guest. Unset: on for consumer GPUs."""


# --- guest ------------------------------------------------------------------


class GuestOs(Model):
    family: Literal["ubuntu", "rhel"]
    """ubuntu (22.04, 24.04) or rhel (RHEL, Alma, Rocky 9)."""
    version: Literal["22.04", "24.04", "9"]


class Cuda(Model):
    version: Version3
    runfile_url: str
    """CUDA .run installer; installed with --toolkit only, never its bundled driver (seed 001)."""


class Nvidia(Model):
    driver_version: str = Field(pattern=r"^\d{3}\.\d{2,3}(\.\d{2})?$")
    """Pinned driver, e.g. 570.172.08."""
    install_method: Literal["package", "runfile"] = "package"
    runfile_url: Optional[str] = None
    """Driver .run installer when install_method is runfile."""
    cuda: Optional[Cuda] = None


class ContainerRuntime(Model):
    name: Literal["containerd", "docker"] = "containerd"
    nvidia_toolkit_version: Version3 = "1.17.8"
    nvidia_default: bool = False
    """containerd only: make nvidia the default runtime instead of using the RuntimeClass."""
    docker_repository: Optional[str] = Field(default=None, pattern=r"^https?://\S+[^/]$")
    """Base URL of Docker's package repository or a mirror of it, laid out like https://download.docker.com/linux (ubuntu/, rhel/, centos/ below it): docker-ce for runtime docker, and containerd.io on EL. Unset: https://download.docker.com/linux."""


class Proxy(Model):
    http: Optional[str] = None
    https: Optional[str] = None
    no_proxy: tuple[str, ...] = ("127.0.0.1", "localhost", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", ".svc", ".cluster.local")


class RegistryMirror(Model):
    registry: str
    """Upstream registry host, e.g. docker.io, nvcr.io, registry.k8s.io."""
    endpoint: str
    """Mirror URL, e.g. https://harbor.lab.local/v2/nvcr."""


class Guest(Model):
    os: GuestOs
    ssh_user: str = "ubuntu"
    ssh_public_key: str = Field(pattern=r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+) ")
    """Authorized for ssh_user via cloud-init; its private half is the secret gpu-stack:sshPrivateKey."""
    min_root_free_gib: int = Field(default=50, ge=1)
    """Driver and CUDA installers fill the root filesystem (seed 001)."""
    nvidia: Nvidia
    container_runtime: ContainerRuntime = ContainerRuntime()
    proxy: Optional[Proxy] = None
    registry_mirrors: tuple[RegistryMirror, ...] = ()
    registry_username: Optional[str] = None
    """User for the private registry; its password is the secret gpu-stack:registryPassword."""
    selinux: Literal["enforcing", "permissive"] = "permissive"
    disable_firewalld: bool = True


# --- Kubernetes -------------------------------------------------------------


class Taint(Model):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class JoinTarget(Model):
    control_plane_endpoint: str = Field(pattern=r"^[A-Za-z0-9.-]+:\d+$")
    ca_cert_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    """--discovery-token-ca-cert-hash; the unsafe skip is never used."""


class Kubernetes(Model):
    version: Version3
    mode: Literal["init", "join", "existing"] = "init"
    """init: the first VM runs kubeadm init, the rest join it. join: all VMs join `join`. existing: nodes are already members; gpu-stack:kubeconfig is required."""
    join: Optional[JoinTarget] = None
    pod_cidr: str = "10.244.0.0/16"
    bootstrap_token_rotation: int = Field(default=0, ge=0)
    """Mode init: bump to derive a new bootstrap token for joining nodes (docs/OPERATIONS.md, rotating the join token)."""
    package_repository: Optional[str] = None
    """Base URL of the kubeadm/kubelet/kubectl repository (a mirror in air-gapped labs). Unset: https://pkgs.k8s.io/core:/stable:/v<minor>, which only exists for Kubernetes 1.24 and newer: older versions need a mirror here."""
    node_labels: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    node_taints: tuple[Taint, ...] = (Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule"),)


# --- add-ons ----------------------------------------------------------------


class TimeSlicing(Model):
    replicas: int = Field(ge=2)
    """Shares per GPU; the device plugin rejects fewer than 2."""
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = True


class DevicePlugin(Model):
    enabled: bool = False
    version: Version3 = "0.20.0"
    """Plugin and chart version (the chart is versioned with the plugin)."""
    deploy: Literal["helm", "static"] = "helm"
    """static: a plain DaemonSet, for clusters too old for the chart (seed 001)."""
    namespace: Name = "nvidia-device-plugin"
    time_slicing: Optional[TimeSlicing] = None
    mig_strategy: Literal["none", "single", "mixed"] = "none"
    fail_on_init_error: bool = True
    """Crash instead of idling when NVML fails, so a broken driver shows up as CrashLoopBackOff."""


class GpuOperator(Model):
    enabled: bool = False
    version: str = Field(default="v26.7.0", pattern=r"^v\d+\.\d+\.\d+$")
    namespace: Name = "gpu-operator"
    device_plugin_enabled: bool = True
    """The operator's own device plugin. Must be false when addons.devicePlugin is enabled."""
    mig_manager_enabled: bool = False
    mig_strategy: Literal["none", "single", "mixed"] = "none"
    dcgm_exporter_version: str = Field(default="4.5.3-4.8.2-distroless", pattern=r"^\d+\.\d+\.\d+-\d+\.\d+\.\d+-[a-z0-9.]+$")
    """dcgmExporter.version: the exporter our counters file (render/dcgm-counters.csv) is derived from, in the chart's tag format (<dcgm-exporter>-<dcgm>-<flavour>)."""


class Monitoring(Model):
    enabled: bool = True
    release_name: Name = "kube-prometheus-stack"
    """Fixed Helm release name; ServiceMonitors must carry `release: <this>` (seed 000)."""
    namespace: Name = "monitoring"
    chart_version: Version3 = "88.5.3"
    retention: str = Field(default="15d", pattern=r"^\d+[smhdwy]$")
    storage_gib: int = Field(default=50, ge=1)
    storage_class: Optional[str] = None
    """StorageClass of Prometheus's volume claim. Unset in mode init: `local-path`, which gpu-stack installs (a new kubeadm cluster has no class). Unset in mode join/existing: see defaultStorageClassExists."""
    default_storage_class_exists: bool = False
    """Mode join/existing with no storageClass: true declares that the cluster has a default StorageClass, and the claim names none. false: no claim is rendered, Prometheus keeps its data in an emptyDir (lost when the pod moves), and the plan says so."""
    service_monitor_selector_nil_uses_helm_values: bool = True
    """Chart default: Prometheus selects only monitors labelled `release: <releaseName>` (gpu-stack always sets it). false: select every ServiceMonitor, PodMonitor and PrometheusRule."""
    dcgm_exporter_image_tag: str = "4.5.3-4.8.2-ubuntu22.04"
    """Standalone dcgm-exporter (device plugin path); the counters file we ship matches 4.5.3-4.8.2."""


class PodNetwork(Model):
    enabled: bool = True
    """Mode init only: install Calico (Tigera operator chart) so the nodes become Ready. false: you install a CNI yourself before the add-ons can start."""
    version: str = Field(default="v3.32.1", pattern=r"^v\d+\.\d+\.\d+$")
    """tigera-operator chart version (= the Calico release) from https://docs.tigera.io/calico/charts."""
    encapsulation: Literal["VXLANCrossSubnet", "VXLAN", "IPIPCrossSubnet", "IPIP", "None"] = "VXLANCrossSubnet"
    """Encapsulation of the IP pool (kubernetes.podCidr). VXLAN needs no BGP and works across routed libvirt networks."""


class GpuQuota(Model):
    namespace: Name
    gpus: int = Field(ge=0)
    """Hard limit on requests.nvidia.com/gpu (quota counts extended resources as requests only; a limits.* key is never counted)."""
    default_request: int = Field(default=1, ge=0)
    create_namespace: bool = True


class Images(Model):
    registry: Optional[str] = Field(default=None, pattern=r"^[a-z0-9.-]+(:\d+)?$")
    """Pull every add-on image from this registry host instead of upstream (seed 001's Harbor): nvcr.io/nvidia/x becomes <registry>/nvidia/x."""
    overrides: dict[str, str] = Field(default_factory=dict)
    """Per-image repository overrides, upstream repository -> replacement, e.g. nvcr.io/nvidia/k8s-device-plugin: harbor.lab/k8s/k8s-device-plugin."""
    smoke_test: str = "nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04"
    pull_secret: Optional[str] = None
    """Name of an existing dockerconfigjson Secret for the private registry, added to every add-on's imagePullSecrets."""


class Addons(Model):
    pod_network: PodNetwork = PodNetwork()
    device_plugin: DevicePlugin = DevicePlugin()
    gpu_operator: GpuOperator = GpuOperator()
    monitoring: Monitoring = Monitoring()
    gpu_quotas: tuple[GpuQuota, ...] = ()
    images: Images = Images()
    smoke_test: bool = True


# --- day 2: rolling upgrades (docs/OPERATIONS.md, Upgrading) -----------------


class Fleet(Model):
    max_unavailable: int = Field(default=1, ge=1)
    """GPU nodes upgraded (cordoned, drained, changed, rebooted) at the same time, after the control plane, which always goes alone first. At least 1 and at most the number of VMs."""
    drain_timeout_seconds: int = Field(default=900, ge=30)
    """How long `kubectl drain` may wait for pods to leave a node (PodDisruptionBudgets are respected, the node is never forced). On timeout the rollout stops with that node cordoned."""
    drained_externally: bool = False
    """kubernetes.mode existing only: the VMs have no kubectl, so gpu-stack cannot cordon or drain them. A version change there is refused on the node until this is true, which says you drain each node yourself before `pulumi up` (docs/OPERATIONS.md, Upgrading)."""


# --- the stack --------------------------------------------------------------


class StackConfig(Model):
    """Everything under `gpu-stack:` except the secrets."""

    production: bool = False
    """Protect stateful resources (domains, disks) from deletion."""
    hosts: tuple[Host, ...] = ()
    vms: tuple[Vm, ...] = ()
    guest: Optional[Guest] = None
    kubernetes: Optional[Kubernetes] = None
    addons: Addons = Addons()
    fleet: Fleet = Fleet()
    """How version changes after the first bootstrap roll over the nodes."""


SECRET_KEYS = ("sshPrivateKey", "joinToken", "grafanaAdminPassword", "registryPassword", "kubeconfig")
"""Config keys read as Pulumi secrets; set them with `pulumi config set --secret`."""
