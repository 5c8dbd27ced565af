"""Typed config of one gpu-stack environment (`gpu-stack:*` in Pulumi.<stack>.yaml).

Validated once, before any resource is registered, so that a typo in a PCI
address fails the preview instead of half-building a VM. Single-field rules
live on the fields; rules that relate several fields live in stacks/checks.py,
which reports the exact key path of each problem.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from config.base import GpuModelName, Model, NvSwitchModelName
from config.kubevirt import KubevirtHost, VmKubevirt
from config.proxmox import ProxmoxHost
from config.support import CHECKED_DCGM_EXPORTER
from config.vsphere import VmVsphere, VsphereHost
from config.types import (
    AbsPath,
    BaseUrl,
    Cidr,
    CpuList,
    DnsSubdomain,
    DownloadUrlOrPath,
    LibvirtUri,
    RegistryMirrorUrl,
    RepositoryUrl,
    ImageReference,
    ImageRepository,
    ImageTag,
    IPv4,
    LabelValue,
    MacAddress,
    Name,
    NoProxyItem,
    PciAddress,
    ProxyUrl,
    QualifiedName,
    RegistryHost,
    SshHostKey,
    SshUser,
    UrlOrPath,
    Version3,
    Word,
    parse_cpu_list,
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
    code: AbsPath = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    """OVMF code image on the host. Must be a non-Secure-Boot build (seed 000)."""
    vars_template: AbsPath = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    """NVRAM template copied per VM."""
    secure_boot: bool = False
    """Set true if `code` is a Secure Boot build (.secboot/.ms/.cc variants)."""


class BaseImage(Model):
    source: UrlOrPath
    """URL or host path of the cloud image (qcow2) the root disks are cloned from."""
    format: Literal["qcow2", "raw"] = "qcow2"


class Host(Model):
    name: Name
    kind: Literal["libvirt", "vsphere", "kubevirt", "proxmox"] = "libvirt"
    """Hypervisor of this host: libvirt (KVM over a libvirt URI), vsphere (ESXi, directly or through vCenter; set `vsphere`), kubevirt (a node of a
    Kubernetes cluster running KubeVirt; set `kubevirt`) or proxmox (a Proxmox VE node; set `proxmox`)."""
    libvirt_uri: Optional[LibvirtUri] = Field(default=None, pattern=r"^qemu(\+[a-z]+)?://\S*$", examples=["qemu+ssh://root@hgx-1.lab/system"])
    """libvirt connection URI, e.g. qemu+ssh://root@gpu-host-1/system. Required for kind libvirt. For qemu+ssh the libvirt provider (its own Go SSH client,
    not `ssh`) gets the key gpu-stack:hypervisorSshPrivateKey (else gpu-stack:sshPrivateKey) and hostKey as its known host; write no keyfile, knownhosts,
    sshauth, no_verify or known_hosts_verify parameter and no port."""
    host_key: Optional[SshHostKey] = Field(default=None, examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILuboOTsYC4LhH1WQEw1vVO3UXJh/+bayMS4bvNu6e2a"])
    """The hypervisor's SSH host key, pinned: required for a qemu+ssh libvirtUri. `ssh-keyscan -t ed25519 HOST` without the host name, checked against
    `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host. Pin the ed25519 key: the provider's client asks for ed25519 first, so a host that has
    one presents it."""
    vsphere: Optional[VsphereHost] = None
    """Where and from what VMs are created on a kind vsphere host. Credentials are the secrets gpu-stack:vsphereUser and gpu-stack:vspherePassword."""
    kubevirt: Optional[KubevirtHost] = None
    """Where and from what VMs are created on a kind kubevirt host. The host cluster's kubeconfig is the secret gpu-stack:kubevirtKubeconfig (never the guest cluster's gpu-stack:kubeconfig)."""
    proxmox: Optional[ProxmoxHost] = None
    """Where and from what VMs are created on a kind proxmox host. Credentials are the secrets gpu-stack:proxmoxPassword (root@pam) and, optionally,
    gpu-stack:proxmoxApiToken."""
    numa_nodes: tuple[NumaNode, ...] = Field(min_length=1)
    """The host's NUMA topology: `lscpu` / `numactl -H`."""
    reserved_cpus: CpuList = ""
    """Host CPUs never pinned to a VM (housekeeping, IRQs)."""
    reserved_memory_gib: int = Field(default=8, ge=0)
    """Memory kept for the host itself; VMs may not use it."""
    phys_addr_bits: int = Field(default=46, ge=36, le=57)
    """Physical address bits of the host CPU (`grep 'address sizes' /proc/cpuinfo`)."""
    storage_pool: Word = "default"
    """libvirt storage pool that holds the base image and the root disks."""
    firmware: HostFirmware = HostFirmware()
    base_image: Optional[BaseImage] = None
    """Cloud image the root disks are cloned from. Required for kind libvirt."""
    thread_siblings: tuple[CpuList, ...] = ()
    """SMT: each entry the two hardware threads of one physical core, as /sys/devices/system/cpu/cpuN/topology/thread_siblings_list prints them (e.g.
    "0,32"). Set: vCPUs are allocated as sibling pairs (vCPUs 2k and 2k+1 on one core) and the guest sees threads=2. Empty: no SMT information, one vCPU
    per host CPU, threads=1. The host-facts script can fill it later."""
    libvirt_version: Optional[str] = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$", examples=["10.0.0"])
    """libvirt on this host (`virsh version --daemon`). Set: the plan refuses domain elements this version lacks (render/hypervisor.py). Unset: not checked."""
    qemu_version: Optional[str] = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$", examples=["8.2.2"])
    """QEMU on this host (`qemu-system-x86_64 --version`). Checked like libvirtVersion."""

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
    name: Word = "default"
    """libvirt network the NIC attaches to (on a vSphere host: hosts[].vsphere.network)."""
    mac: Optional[MacAddress] = None
    """Fixed MAC. Unset: derived from stack and VM name, stable forever (seed 000 lost its DHCP lease when the MAC changed): 52:54:00:xx:xx:xx on libvirt, in
    VMware's static range 00:50:56:00:00:00-00:50:56:3f:ff:ff on vSphere (which accepts no other manual MAC)."""
    address: Optional[IPv4] = None
    """The guest's IPv4 address when known (DHCP reservation for the MAC). Unset: the DHCP lease address."""
    wait_for_lease: bool = True


class VmFirmware(Model):
    type: Literal["efi", "bios"] = "efi"
    """Boot firmware. With GPUs only efi is accepted (seed 001: otherwise the OS may not install or the GPU is not seen). libvirt always boots OVMF
    (hosts[].firmware.code); vSphere: the VirtualMachine's firmware."""
    secure_boot: bool = False
    """Boot with UEFI Secure Boot. With GPUs refused unless allowSecureBootWithGpus. libvirt: follows hosts[].firmware.code instead; vSphere: efi_secure_boot_enabled."""
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
    """Override the computed 64-bit MMIO window (libvirt pci-hole64-size, vSphere pciPassthru.64bitMMIOSizeGB). Smaller than needed is an error."""
    kvm_hidden: Optional[bool] = None
    """Hide the hypervisor from the guest (libvirt <kvm><hidden>, vSphere hypervisor.cpuid.v0 = FALSE). Unset: on for consumer GPUs (catalog), off for data-centre GPUs."""
    vsphere: Optional[VmVsphere] = None
    """Settings for a VM on a kind vsphere host."""
    kubevirt: Optional[VmKubevirt] = None
    """Settings for a VM on a kind kubevirt host."""


# --- guest ------------------------------------------------------------------


class GuestOs(Model):
    family: Literal["ubuntu", "rhel"]
    """ubuntu (22.04, 24.04) or rhel (RHEL, Alma, Rocky 9)."""
    version: Literal["22.04", "24.04", "9"]


class Cuda(Model):
    version: Version3
    runfile_url: DownloadUrlOrPath
    """CUDA .run installer; installed with --toolkit only, never its bundled driver (seed 001)."""


class Nvidia(Model):
    driver_version: str = Field(pattern=r"^\d{3}\.\d{2,3}\.\d{2}$", examples=["570.172.08"])
    """Pinned driver, all three parts as NVIDIA publishes it (570.172.08): the packages and the runfile are named by them."""
    install_method: Literal["package", "runfile"] = "package"
    runfile_url: Optional[DownloadUrlOrPath] = None
    """Driver .run installer when install_method is runfile."""
    kernel_modules: Optional[Literal["open", "proprietary"]] = None
    """NVIDIA kernel module flavour. Unset: from each VM's GPU architecture (config/catalog.py): open from Turing on (NVIDIA's recommendation, required by
    Blackwell), proprietary for Pascal and Volta, which cannot run the open modules."""
    cuda: Optional[Cuda] = None


class ContainerRuntime(Model):
    name: Literal["containerd", "docker"] = "containerd"
    nvidia_toolkit_version: Version3 = "1.20.0"
    nvidia_default: bool = False
    """containerd only: make nvidia the default runtime instead of using the RuntimeClass."""
    docker_repository: Optional[BaseUrl] = Field(default=None, json_schema_extra={"pattern": r"^https?://\S+[^/]$"})  # for editors
    """Base URL of Docker's package repository or a mirror of it, laid out like https://download.docker.com/linux (ubuntu/, rhel/, centos/ below it):
    docker-ce for runtime docker, and containerd.io on EL. Unset: https://download.docker.com/linux."""


class GuestRepositories(Model):
    """Base URLs of NVIDIA's package repositories (or mirrors of them in air-gapped labs); the signing keys come from the same base."""
    nvidia_container_toolkit: Optional[BaseUrl] = Field(default=None, json_schema_extra={"pattern": r"^https?://\S+[^/]$"})  # for editors
    """NVIDIA's libnvidia-container repository (nvidia-container-toolkit and its libraries) or a mirror laid out like
    https://nvidia.github.io/libnvidia-container (stable/deb/, stable/rpm/ and the key gpgkey below it). Unset:
    https://nvidia.github.io/libnvidia-container."""
    cuda: Optional[BaseUrl] = Field(default=None, json_schema_extra={"pattern": r"^https?://\S+[^/]$"})  # for editors
    """NVIDIA's CUDA repositories or a mirror laid out like https://developer.download.nvidia.com/compute/cuda/repos (<distro>/x86_64/ below it: rhel9,
    ubuntu2204, ubuntu2404). Used on EL for the driver and Fabric Manager, on Ubuntu only for nvlsm (NVLink 5). Unset:
    https://developer.download.nvidia.com/compute/cuda/repos."""


class Proxy(Model):
    http: Optional[ProxyUrl] = None
    """Proxy for http:// URLs, with its scheme: http://proxy.lab.local:3128."""
    https: Optional[ProxyUrl] = None
    """Proxy for https:// URLs, with its scheme (usually http://, the CONNECT proxy)."""
    username: Optional[Word] = None
    """User the proxy asks for (HTTP Basic); its password is the secret gpu-stack:proxyPassword. Never user:password@ in http or https: the guest writes the
    credentials only to root-only files (docs/OPERATIONS.md, Proxy and mirror credentials)."""
    no_proxy: tuple[NoProxyItem, ...] = ("127.0.0.1", "localhost", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", ".svc", ".cluster.local")


class RegistryMirror(Model):
    registry: RegistryHost
    """Upstream registry host, e.g. docker.io, nvcr.io, registry.k8s.io."""
    endpoint: RegistryMirrorUrl
    """Mirror URL, e.g. https://harbor.lab.local/v2/nvcr."""


class Guest(Model):
    os: GuestOs
    ssh_user: SshUser = "ubuntu"
    """User cloud-init creates and gpu-stack connects as (passwordless sudo); a useradd name such as ubuntu."""
    ssh_public_key: str = Field(pattern=r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$", examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKey ops@lab"])
    """Authorized for ssh_user via cloud-init; its private half is the secret gpu-stack:sshPrivateKey."""
    min_root_free_gib: int = Field(default=50, ge=1)
    """Driver and CUDA installers fill the root filesystem (seed 001)."""
    nvidia: Nvidia
    container_runtime: ContainerRuntime = ContainerRuntime()
    repositories: GuestRepositories = GuestRepositories()
    """NVIDIA's package repositories the guest phases add (Docker's: containerRuntime.dockerRepository; Kubernetes': kubernetes.packageRepository)."""
    proxy: Optional[Proxy] = None
    registry_mirrors: tuple[RegistryMirror, ...] = ()
    registry_username: Optional[Word] = None
    """User for the private registry; its password is the secret gpu-stack:registryPassword."""
    repository_username: Optional[Word] = None
    """User for the configured package mirrors (guest.repositories.*, guest.containerRuntime.dockerRepository, kubernetes.packageRepository) and runfile
    URLs; its password is the secret gpu-stack:repositoryPassword. apt gets them in /etc/apt/auth.conf.d/gpu-stack.conf, dnf in the mirror's .repo, both
    mode 0600 (docs/OPERATIONS.md, Proxy and mirror credentials)."""
    selinux: Literal["enforcing", "permissive"] = "permissive"
    disable_firewalld: bool = True


# --- Kubernetes -------------------------------------------------------------


class Taint(Model):
    key: QualifiedName
    value: LabelValue = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class JoinTarget(Model):
    control_plane_endpoint: str = Field(pattern=r"^[A-Za-z0-9.-]+:\d+$", examples=["cp.lab.local:6443"])
    ca_cert_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", examples=["sha256:" + "0" * 64])
    """--discovery-token-ca-cert-hash; the unsafe skip is never used."""


class Kubernetes(Model):
    version: Version3
    mode: Literal["init", "join", "existing"] = "init"
    """init: the first VM runs kubeadm init, the rest join it. join: all VMs join `join`. existing: nodes are already members; gpu-stack:kubeconfig is required."""
    join: Optional[JoinTarget] = None
    pod_cidr: Cidr = "10.244.0.0/16"
    """Pod network (kubeadm init --pod-network-cidr); must not overlap serviceCidr or the VMs' network."""
    service_cidr: Cidr = "10.96.0.0/12"
    """Service network (kubeadm init --service-cidr, kubeadm's default); must not overlap podCidr or the VMs' network."""
    join_token_ttl: str = Field(default="2h", pattern=r"^([1-9]\d*)(m|h)$")
    """Mode init: lifetime of the bootstrap token the control plane creates for each joining VM (`kubeadm token create --ttl`), e.g. 30m or 2h. A joined node
    never needs it again (docs/OPERATIONS.md, join tokens)."""
    package_repository: Optional[RepositoryUrl] = None
    """Base URL of the kubeadm/kubelet/kubectl repository (a mirror in air-gapped labs). Unset: https://pkgs.k8s.io/core:/stable:/v<minor>, which only exists
    for Kubernetes 1.24 and newer: older versions need a mirror here."""
    node_labels: dict[QualifiedName, LabelValue] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    past_end_of_support: Optional[str] = Field(default=None, min_length=10, pattern=r"^[^\r\n]*\S[^\r\n]*$",
                                               examples=["joins an existing 1.23.17 cluster that gpu-stack does not upgrade"])
    """Why this stack keeps a Kubernetes version past its end of support (config/support.py), e.g. the existing cluster it joins runs it. The plan still says
    the version has ended, with this reason, and versions.json records it; the example-stack test accepts an ended version only with it."""
    node_taints: Optional[tuple[Taint, ...]] = None
    """Taints on the GPU VMs' nodes. Unset: derived from the mode, so that the default is valid in every mode: none in mode init (every node of the cluster
    is one of these GPU VMs, and a NoSchedule taint on all of them would leave CoreDNS Pending), nvidia.com/gpu=true:NoSchedule in modes join and existing
    (the cluster has other nodes for the rest)."""

    @model_validator(mode="after")
    def _derived_taints(self) -> "Kubernetes":
        if self.node_taints is None:
            object.__setattr__(self, "node_taints", default_node_taints(self.mode))
        return self


def default_node_taints(mode: str) -> tuple[Taint, ...]:
    """kubernetes.nodeTaints when unset: none in mode init, where every node is a GPU VM; GPU nodes reserved for GPU pods otherwise."""
    return () if mode == "init" else (Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule"),)


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
    dcgm_exporter_version: str = Field(default=f"{CHECKED_DCGM_EXPORTER}-distroless", pattern=r"^\d+\.\d+\.\d+-\d+\.\d+\.\d+-[a-z0-9.]+$")
    """dcgmExporter.version: the exporter our counters file (render/dcgm-counters.csv) is derived from, in the chart's tag format (<dcgm-exporter>-<dcgm>-<flavour>)."""


class DriftCheck(Model):
    enabled: bool = False
    """A DaemonSet on the GPU nodes that compares each node's driver, Fabric Manager, toolkit, kubelet/kubeadm and GPUs
    with what gpu-stack recorded on its Node (gpu-stack.io/expected-*, gpu-stack.io/gpu-uuids) and exports
    gpu_stack_node_drift, with the alert GpuStackNodeDrift. Needs monitoring.enabled."""
    interval_seconds: int = Field(default=300, ge=60, le=86400)
    """How often each node is compared (seconds)."""


class Monitoring(Model):
    enabled: bool = True
    release_name: Name = "kube-prometheus-stack"
    """Fixed Helm release name; ServiceMonitors must carry `release: <this>` (seed 000)."""
    namespace: Name = "monitoring"
    chart_version: Version3 = "88.5.3"
    retention: str = Field(default="15d", pattern=r"^\d+[smhdwy]$")
    storage_gib: int = Field(default=50, ge=1)
    storage_class: Optional[DnsSubdomain] = None
    """StorageClass of Prometheus's volume claim. Unset in mode init: `local-path`, which gpu-stack installs (a new kubeadm cluster has no class). Unset in
    mode join/existing: see defaultStorageClassExists."""
    default_storage_class_exists: bool = False
    """Mode join/existing with no storageClass: true declares that the cluster has a default StorageClass, and the claim names none. false: no claim is
    rendered, Prometheus keeps its data in an emptyDir (lost when the pod moves), and the plan says so."""
    service_monitor_selector_nil_uses_helm_values: bool = True
    """Chart default: Prometheus selects only monitors labelled `release: <releaseName>` (gpu-stack always sets it). false: select every ServiceMonitor, PodMonitor and PrometheusRule."""
    dcgm_exporter_image_tag: ImageTag = f"{CHECKED_DCGM_EXPORTER}-ubuntu22.04"
    """Standalone dcgm-exporter (device plugin path); the counters file we ship matches 4.5.3-4.8.2."""
    drift_check: DriftCheck = Field(default_factory=DriftCheck)
    """The optional in-cluster drift check (docs/OPERATIONS.md, Drift): off by default."""


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
    registry: Optional[str] = Field(default=None, pattern=r"^[a-z0-9.-]+(:\d+)?$", examples=["harbor.lab.local:5000"])
    """Pull every add-on image from this registry host instead of upstream (seed 001's Harbor): nvcr.io/nvidia/x becomes <registry>/nvidia/x."""
    overrides: dict[ImageRepository, ImageRepository] = Field(default_factory=dict)
    """Per-image repository overrides, upstream repository -> replacement, e.g. nvcr.io/nvidia/k8s-device-plugin: harbor.lab/k8s/k8s-device-plugin."""
    smoke_test: ImageReference = "nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04"
    """Image of the smoke-test Job, with its tag (or @sha256 digest); registry and overrides apply to its repository."""
    pull_secret: Optional[DnsSubdomain] = None
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
    """kubernetes.mode existing only: the VMs have no kubectl, so gpu-stack cannot cordon or drain them. A version change there is refused on the node until
    this is true, which says you drain each node yourself before `pulumi up` (docs/OPERATIONS.md, Upgrading)."""


# --- the burn-in gate (issue 27; render/burnin.py, docs/OPERATIONS.md "Burn-in") -----


DCGM_IMAGE = "nvcr.io/nvidia/cloud-native/dcgm:4.6.0-1-ubuntu24.04"
"""DCGM 4.6.0 with dcgmi and the diagnostics: the standalone DCGM image GPU Operator v26.7.0 pins (values.yaml `dcgm:`,
tests/reference/gpu-operator-v26.7.0.values.yaml); NVIDIA/DCGM docker/Dockerfile.* installs datacenter-gpu-manager-4-cuda12."""
NCCL_TESTS_IMAGE = "public.ecr.aws/hpc-cloud/nccl-tests:cuda12.8.1-efa1.43.2-ofiv1.16.3-ncclv2.27.7-1-testsv2.16.9"
"""nccl-tests v2.16.9 on NCCL 2.27.7 and CUDA 12.8.1, binaries in /opt/nccl-tests/build/: the image NVIDIA's AICR v0.11.1
runs its EKS all-reduce check with (docs/SOURCES.md, Burn-in)."""


class BurnIn(Model):
    enabled: bool = True
    """Burn in every GPU node (DCGM diagnostics, an NCCL all-reduce over all its GPUs, P2P) before it takes work: at
    the first deploy and after every upgrade wave. A node that fails stays cordoned. VMs without GPUs never run it."""
    dcgm_level: int = Field(default=2, ge=1, le=4)
    """`dcgmi diag -r` level: 1 quick (seconds), 2 medium (about two minutes), 3 long (about 15 minutes), 4 extended. 0 is not accepted:
    turn the burn-in off with enabled: false."""
    nccl: bool = True
    """Run nccl-tests all_reduce_perf over all the node's GPUs (8 B to 1 GiB) and gate on the busbw of the largest size."""
    min_busbw_fraction: float = Field(default=0.8, gt=0, le=1)
    """The gate fails below this fraction of the expected all-reduce busbw."""
    expected_busbw_gbps: dict[GpuModelName, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Expected all-reduce busbw (GB/s) of a healthy node of this GPU model, for the models whose figure the catalog
    has no source for (H800, A800, B200/B300, V100-SXM2, every PCIe card); also overrides a catalog figure. Measure
    one healthy node."""
    dcgm_image: ImageReference = DCGM_IMAGE
    """Image with dcgmi (and nv-hostengine); registry and overrides apply to its repository."""
    nccl_image: ImageReference = NCCL_TESTS_IMAGE
    """Image with nccl-tests' all_reduce_perf in /opt/nccl-tests/build/; registry and overrides apply."""
    timeout_seconds: int = Field(default=1800, ge=60, le=7200)
    """How long the gate waits for a node's burn-in Jobs."""


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
    burn_in: BurnIn = BurnIn()
    """The burn-in gate: DCGM diagnostics, an NCCL all-reduce and P2P on every GPU node before it takes work."""


REMOVED_KEYS: dict[tuple[str, ...], str] = {
    ("kubernetes", "bootstrapTokenRotation"): (
        "was removed: gpu-stack no longer derives a never-expiring bootstrap token. The control plane now "
        "creates a short-lived token for each VM that joins (kubernetes.joinTokenTtl, default 2h), so there is "
        "nothing to rotate; delete this key (docs/OPERATIONS.md, join tokens)"
    ),
}
"""Keys that older gpu-stack versions accepted, with what replaced them; refused by name."""

SECRET_KEYS = ("sshPrivateKey", "hypervisorSshPrivateKey", "joinToken", "grafanaAdminPassword", "registryPassword", "proxyPassword",
               "repositoryPassword", "kubeconfig", "vsphereUser", "vspherePassword", "kubevirtKubeconfig",
               "proxmoxPassword", "proxmoxApiToken")
"""Config keys read as Pulumi secrets; set them with `pulumi config set --secret`."""
