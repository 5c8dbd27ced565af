"""KubeVirt's config checks: a host's kubevirt block and the host cluster's kubeconfig, its VMs' kubevirt block."""

from __future__ import annotations

from config.catalog import GPU_MODELS, NVSWITCH_MODELS
from config.errors import ConfigIssue
from config.kubevirt import VmKubevirt
from config.models import Host, StackConfig


def stack_issues(cfg: StackConfig, secrets: set[str], by_host: dict) -> list[ConfigIssue]:
    """All KubeVirt hosts share one host cluster (gpu-stack:kubevirtKubeconfig): a namespace is created once, so its hosts agree on createNamespace."""
    issues: list[ConfigIssue] = []
    first: dict[str, tuple[int, bool]] = {}
    for hi, host in enumerate(cfg.hosts):
        kv = host.kubevirt if host.kind == "kubevirt" else None
        if kv is None:
            continue
        hj, create = first.setdefault(kv.namespace, (hi, kv.create_namespace))
        if create != kv.create_namespace:
            issues.append(ConfigIssue(f"hosts[{hi}].kubevirt.createNamespace", f"{str(kv.create_namespace).lower()}, but hosts[{hj}] ({cfg.hosts[hj].name}) puts its VMs in the same "
                                                                              f"namespace {kv.namespace} with hosts[{hj}].kubevirt.createNamespace {str(create).lower()}; "
                                                                              "the namespace is created once per host cluster, so set the same value on both"))
    return issues


def host_issues(hi: int, host: Host, vms: list, secrets: set[str]) -> list[ConfigIssue]:
    """A KubeVirt host: its block, the host cluster's kubeconfig, root disk, SSH path, and who advertises each device."""
    issues: list[ConfigIssue] = []
    key = f"hosts[{hi}]"
    for field in ("libvirt_uri", "base_image", "host_key", "vsphere"):
        if getattr(host, field) is not None:
            alias = Host.model_fields[field].alias
            issues.append(ConfigIssue(f"{key}.{alias}", f"not used by kind kubevirt (the VM's disk is {key}.kubevirt.rootDisk); remove it"))
    if vms and "kubevirtKubeconfig" not in secrets:
        issues.append(ConfigIssue("kubevirtKubeconfig", f"KubeVirt host {host.name} needs the kubeconfig of its host cluster (never the guest cluster's gpu-stack:kubeconfig); "
                                                         "set it with `pulumi config set --secret gpu-stack:kubevirtKubeconfig < host-cluster.kubeconfig`"))
    kv = host.kubevirt
    if kv is None:
        issues.append(ConfigIssue(f"{key}.kubevirt", "required for kind kubevirt: namespace, nodeName (or nodeSelector) and rootDisk"))
        return issues
    k = f"{key}.kubevirt"
    if kv.create_namespace and kv.namespace == kv.kubevirt_namespace:
        issues.append(ConfigIssue(f"{k}.createNamespace", f"{k}.namespace {kv.namespace} is the KubeVirt CR's namespace ({k}.kubevirtNamespace), which exists already; "
                                                          "set createNamespace: false or give the VMs a namespace of their own"))
    if (kv.node_name is None) == (not kv.node_selector):
        issues.append(ConfigIssue(f"{k}.nodeName", "set exactly one of nodeName (the node's kubernetes.io/hostname) and nodeSelector: passed-through "
                                                   "devices are a node's, so a GPU VM is bound to one"))
    d = kv.root_disk
    sources = [n for n, v in (("url", d.url), ("registry", d.registry), ("containerDisk", d.container_disk)) if v is not None]
    if len(sources) != 1:
        issues.append(ConfigIssue(f"{k}.rootDisk", "set exactly one of url (DataVolume from an image URL), registry (DataVolume from a registry image) "
                                                   f"and containerDisk; got {', '.join(sources) or 'none'}"))
    elif d.container_disk is not None and d.storage_class is not None:
        issues.append(ConfigIssue(f"{k}.rootDisk.storageClass", "a containerDisk is ephemeral and has no volume; remove storageClass or import the image into a DataVolume (url or registry)"))
    ssh = kv.ssh
    if ssh.via == "multus":
        issues.append(ConfigIssue(f"{k}.ssh.via", "multus (a secondary network with a static address) is not implemented in this gpu-stack; use service (NodePort or LoadBalancer)"))
    elif ssh.service_type == "NodePort":
        if ssh.node_port is None:
            issues.append(ConfigIssue(f"{k}.ssh.nodePort", "required for serviceType NodePort: a fixed port in 30000-32767, so the SSH endpoint is known before the Service exists"))
        elif ssh.node_port + len(vms) - 1 > 32767:
            issues.append(ConfigIssue(f"{k}.ssh.nodePort", f"{ssh.node_port} is the first of {len(vms)} node ports (one per VM on {host.name}: "
                                                           "nodePort, nodePort+1, ...); the last must be at most 32767"))
        if ssh.address is None:
            issues.append(ConfigIssue(f"{k}.ssh.address", "required for serviceType NodePort: the address of a host-cluster node reachable from where Pulumi runs"))
    else:
        for field, alias in (("node_port", "nodePort"), ("address", "address")):
            if getattr(ssh, field) is not None:
                issues.append(ConfigIssue(f"{k}.ssh.{alias}", "only for serviceType NodePort; a LoadBalancer is reached at its ingress address"))
    ours = set(kv.device_plugins.kubevirt or ())
    for j, model in enumerate(kv.device_plugins.gpu_operator):
        if model in ours:
            issues.append(ConfigIssue(f"{k}.devicePlugins.gpuOperator[{j}]", f"{model} is also in {k}.devicePlugins.kubevirt: two device plugins would advertise the same device "
                                                                            "(KubeVirt's with externalResourceProvider false, and the GPU Operator's sandbox plugin); keep it in one list"))
    for vi, vm in vms:
        for kind, devices in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
            catalog = GPU_MODELS if kind == "gpus" else NVSWITCH_MODELS
            for di, dev in enumerate(devices):
                if not catalog[dev.model].pci_ids:
                    issues.append(ConfigIssue(f"vms[{vi}].{kind}[{di}].model", f"{dev.model} has no vendor:device ID in config/catalog.py, and a KubeVirt host selects devices by it "
                                                                              "(permittedHostDevices.pciHostDevices[].pciVendorSelector); add the ID "
                                                                              "from `lspci -nn -d 10de:` to the catalog with its source"))
                elif kv.device_plugins.kubevirt is not None and dev.model not in ours and dev.model not in kv.device_plugins.gpu_operator:
                    issues.append(ConfigIssue(f"vms[{vi}].{kind}[{di}].model", f"{dev.model} is advertised by no device plugin on {host.name}; add it to {k}.devicePlugins.kubevirt or .gpuOperator"))
    return issues


def vm_issues(hi: int, host: Host, vi: int, vm) -> list[ConfigIssue]:
    issues = []
    key = f"vms[{vi}]"
    opts = vm.kubevirt or VmKubevirt()
    if vm.vsphere is not None:
        issues.append(ConfigIssue(f"{key}.vsphere", f"host {host.name} is kind kubevirt; this block is for VMs on kind vsphere hosts"))
    if vm.numa.expose_gpu_affinity:
        issues.append(ConfigIssue(f"{key}.numa.exposeGpuAffinity", "libvirt only (pcie-expander-bus); on KubeVirt set kubevirt.guestNuma (guestMappingPassthrough)"))
    if vm.numa.cells is not None:
        issues.append(ConfigIssue(f"{key}.numa.cells", "libvirt only; KubeVirt derives guest cells from the dedicated CPUs it pins (kubevirt.guestNuma)"))
    if opts.isolate_emulator_thread and not opts.dedicated_cpus:
        issues.append(ConfigIssue(f"{key}.kubevirt.isolateEmulatorThread", "needs kubevirt.dedicatedCpus: true (KubeVirt only isolates the emulator thread of a VM with dedicated CPUs)"))
    if opts.guest_numa and not (opts.dedicated_cpus and vm.numa.hugepages_1g):
        issues.append(ConfigIssue(f"{key}.kubevirt.guestNuma", "guestMappingPassthrough needs kubevirt.dedicatedCpus: true and numa.hugepages1g: true (KubeVirt refuses it otherwise)"))
    return issues
