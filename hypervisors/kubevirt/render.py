"""The KubeVirt mapping of the neutral VmPlan: pure dicts, no Pulumi.

Pinned KubeVirt release: v1.9.0 (kubevirt/kubevirt tag v1.9.0, commit
79d34c1762169e5b0370ec491cef5ca12e6b504c; v1.8.4 before). Every field below is in that
release's CRD schemas, kept in tests/reference/kubevirt-v1.9.0-*.openapi.yaml
(tests/test_kubevirt.py validates each object against them). Sources, re-read at v1.9.0:

- domain.devices.gpus[] / hostDevices[] {name, deviceName}: staging/src/kubevirt.io/api/core/v1/schema.go
  (GPU, HostDevice); the deviceName is a resource name from permittedHostDevices.
- firmware.bootloader.efi {secureBoot, persistent}: schema.go (EFI). persistent keeps the EFI
  variables in the VM's backend storage; its feature gate VMPersistentState is GA in v1.9.0
  (pkg/virt-config/featuregate/inactive.go).
- cpu.dedicatedCpuPlacement, isolateEmulatorThread, numa.guestMappingPassthrough, memory.hugepages:
  schema.go (CPU, NUMA, Hugepages).
- features.kvm.hidden: schema.go (FeatureKVM).
- cloudInitNoCloud.secretRef: schema.go (CloudInitNoCloudSource).
- interfaces[].macAddress with masquerade on the pod network: schema.go (Interface).
- spec.runStrategy: types.go (VirtualMachineRunStrategy).
- The 64-bit PCI hole: v1.9.0 (like v1.8.4) has no annotation that sizes it, only kubevirt.io/disablePCIHole64
  (types.go DisablePCIHole64; pkg/virt-launcher/virtwrap/converter/compute/controllers.go shouldDisablePCIHole64,
  in converter.go at v1.8.4; kubevirt PR 18013's pciHole64Size is not in v1.9.0).
  So a hook sidecar sets <pcihole64> on the pcie-root controller: the annotation
  hooks.kubevirt.io/hookSidecars (pkg/hooks/hooks.go: HookSidecar{args, image, configMap{name, key, hookPath}})
  with a ConfigMap holding scripts/kubevirt/pcihole64-hook.sh at hookPath /usr/bin/onDefineDomain
  (cmd/sidecars/README.md, "Using ConfigMap to run custom script"). The hook needs the Sidecar feature gate.
- KubeVirt CR: spec.configuration.permittedHostDevices.pciHostDevices[] {pciVendorSelector,
  resourceName, externalResourceProvider} and developerConfiguration.featureGates (types.go
  PermittedHostDevices, PciHostDevice). Feature gates still Alpha in v1.9.0 that gpu-stack needs:
  HostDevices and Sidecar (pkg/virt-config/featuregate/active.go); GPU is GA (inactive.go).
- KubeVirt's own device plugin advertises one device per IOMMU group: pkg/virt-handler/device-manager/
  pci_device.go constructDPIdevices uses the IOMMU group as the device ID, so two GPUs in one group
  are one allocatable device (seed 002).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from config.catalog import GIB, GPU_MODELS, NVSWITCH_MODELS, device_model
from render.vm_plan import VmPlan
from config.kubevirt import KubevirtHost, VmKubevirt
from config.models import Host, StackConfig, Vm

KUBEVIRT_VERSION = "v1.9.0"
FEATURE_GATES = ("HostDevices", "Sidecar")
"""Alpha in v1.9.0 (pkg/virt-config/featuregate/active.go) and needed here: HostDevices (hostDevices, for NVSwitches), Sidecar (the pcihole64 hook)."""
HOOK_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kubevirt" / "pcihole64-hook.sh"
HOOK_KEY = "pcihole64.sh"
HOOK_PATH = "/usr/bin/onDefineDomain"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gpu-stack"}
VM_LABEL = "gpu-stack.io/vm"
ROOT_DISK = "rootdisk"
CLOUD_INIT_DISK = "cloudinitdisk"


@dataclass(frozen=True)
class Names:
    vm: str
    root_volume: str
    cloud_init_secret: str
    hook_configmap: str
    ssh_service: str


def names(vm: Vm) -> Names:
    return Names(vm.name, f"{vm.name}-root", f"{vm.name}-cloudinit", f"{vm.name}-pcihole64", f"{vm.name}-ssh")


def device_resource(role: str, model: str) -> str:
    """The resource name a device plugin advertises for a model; `role`: "gpus" or "nvswitches" (render/vm_plan.PlannedDevice)."""
    return (GPU_MODELS if role == "gpus" else NVSWITCH_MODELS)[model].resource


def hook_script(hole64_gib: int) -> str:
    return HOOK_SCRIPT.read_text().replace("@HOLE64_KIB@", str(hole64_gib * GIB // 1024))


def hook_configmap(plan: VmPlan, vm: Vm, kv: KubevirtHost) -> dict | None:
    """The ConfigMap with the onDefineDomain script; None when nothing is passed through."""
    if not plan.mmio64_gib:
        return None
    n = names(vm)
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": n.hook_configmap, "namespace": kv.namespace, "labels": {**MANAGED_BY, VM_LABEL: vm.name}},
        "data": {HOOK_KEY: hook_script(plan.mmio64_gib)},
    }


def hook_annotation(vm: Vm, kv: KubevirtHost) -> str:
    return json.dumps([{
        "args": ["--version", "v1alpha2"],
        "image": kv.sidecar_image,
        "configMap": {"name": names(vm).hook_configmap, "key": HOOK_KEY, "hookPath": HOOK_PATH},
    }], sort_keys=True, separators=(",", ":"))


def _root_volume(plan: VmPlan, vm: Vm, kv: KubevirtHost) -> tuple[dict, list[dict]]:
    """The root volume of the VMI and the VM's dataVolumeTemplates."""
    d = kv.root_disk
    n = names(vm)
    if d.container_disk is not None:
        return {"name": ROOT_DISK, "containerDisk": {"image": d.container_disk}}, []
    source = {"http": {"url": d.url}} if d.url is not None else {"registry": {"url": f"docker://{d.registry}"}}
    storage: dict = {"resources": {"requests": {"storage": f"{plan.disk_gib}Gi"}}}
    if d.storage_class is not None:
        storage["storageClassName"] = d.storage_class
    template = {"metadata": {"name": n.root_volume, "labels": {**MANAGED_BY, VM_LABEL: vm.name}},
                "spec": {"source": source, "storage": storage}}
    return {"name": ROOT_DISK, "dataVolume": {"name": n.root_volume}}, [template]


def virtual_machine(plan: VmPlan, vm: Vm, host: Host) -> dict:
    """The kubevirt.io/v1 VirtualMachine of this plan."""
    kv = host.kubevirt
    opts = vm.kubevirt or VmKubevirt()
    n = names(vm)
    memory = f"{plan.memory_mib}Mi"
    # not render/numa.guest_topology: KubeVirt chooses the host CPUs itself (dedicatedCpuPlacement) and maps
    # the guest's NUMA cells from them (guestMappingPassthrough), so no socket or SMT pairing of ours holds there
    cpu: dict = {"cores": plan.vcpus, "sockets": 1, "threads": 1}
    if opts.dedicated_cpus:
        cpu["dedicatedCpuPlacement"] = True
    if opts.isolate_emulator_thread:
        cpu["isolateEmulatorThread"] = True
    if opts.guest_numa:
        cpu["numa"] = {"guestMappingPassthrough": {}}
    domain_memory: dict = {"guest": memory}
    if plan.hugepages_1g:
        domain_memory["hugepages"] = {"pageSize": "1Gi"}
    resources: dict = {"requests": {"memory": memory}, "limits": {"memory": memory}}
    if opts.dedicated_cpus:
        resources["requests"]["cpu"] = str(plan.vcpus)
        resources["limits"]["cpu"] = str(plan.vcpus)
    root, templates = _root_volume(plan, vm, kv)
    domain: dict = {
        "cpu": cpu,
        "memory": domain_memory,
        "resources": resources,
        "firmware": {"bootloader": {"efi": {"secureBoot": plan.secure_boot, "persistent": True}}},
        "devices": {
            "disks": [{"name": ROOT_DISK, "disk": {"bus": "virtio"}}, {"name": CLOUD_INIT_DISK, "disk": {"bus": "virtio"}}],
            "interfaces": [{"name": "default", "masquerade": {}, "macAddress": plan.mac}],
        },
    }
    if plan.hide_hypervisor:
        domain["features"] = {"kvm": {"hidden": True}}
    # the plan's devices, named as KubeVirt's device plugins advertise them (the resource of the catalog model)
    gpus = [{"name": f"gpu{i}", "deviceName": device_resource(d.role, d.model)} for i, d in enumerate(d for d in plan.devices if d.role == "gpus")]
    switches = [{"name": f"nvswitch{i}", "deviceName": device_resource(d.role, d.model)} for i, d in enumerate(d for d in plan.devices if d.role == "nvswitches")]
    if gpus:
        domain["devices"]["gpus"] = gpus
    if switches:
        domain["devices"]["hostDevices"] = switches
    template_meta: dict = {"labels": {VM_LABEL: vm.name, "kubevirt.io/vm": vm.name}}
    if plan.mmio64_gib:
        template_meta["annotations"] = {"hooks.kubevirt.io/hookSidecars": hook_annotation(vm, kv)}
    node_selector = {"kubernetes.io/hostname": kv.node_name} if kv.node_name else dict(sorted(kv.node_selector.items()))
    spec: dict = {
        "runStrategy": opts.run_strategy,
        "template": {
            "metadata": template_meta,
            "spec": {
                "nodeSelector": node_selector,
                "domain": domain,
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [root, {"name": CLOUD_INIT_DISK, "cloudInitNoCloud": {"secretRef": {"name": n.cloud_init_secret}}}],
            },
        },
    }
    if templates:
        spec["dataVolumeTemplates"] = templates
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": n.vm, "namespace": kv.namespace, "labels": {**MANAGED_BY, VM_LABEL: vm.name}},
        "spec": spec,
    }


def cloud_init_secret_meta(vm: Vm, kv: KubevirtHost) -> dict:
    """Metadata of the Secret whose `userdata` key is the cloud-init user-data (the same as libvirt's)."""
    return {"name": names(vm).cloud_init_secret, "namespace": kv.namespace, "labels": {**MANAGED_BY, VM_LABEL: vm.name}}


def vm_namespaces(hosts: list[Host]) -> list[dict]:
    """The Namespaces gpu-stack creates on the host cluster: one per hosts[].kubevirt.namespace with createNamespace
    (hosts share one host cluster, so VMs of several hosts may share one), in name order."""
    wanted = sorted({h.kubevirt.namespace for h in hosts if h.kubevirt is not None and h.kubevirt.create_namespace})
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": dict(MANAGED_BY)}} for ns in wanted]


def preexisting_namespaces(hosts: list[Host]) -> set[str]:
    """Host-cluster namespaces the config declares to exist already: the KubeVirt CR's, and the VMs' where createNamespace is false."""
    out: set[str] = set()
    for h in hosts:
        if h.kind == "kubevirt" and h.kubevirt is not None:
            out.add(h.kubevirt.kubevirt_namespace)
            if not h.kubevirt.create_namespace:
                out.add(h.kubevirt.namespace)
    return out


def ssh_node_port(cfg: StackConfig, vm: Vm) -> int | None:
    """NodePort of this VM's SSH Service: hosts[].kubevirt.ssh.nodePort for the host's first VM, +1 for each next one."""
    host = next(h for h in cfg.hosts if h.name == vm.host)
    base = host.kubevirt.ssh.node_port if host.kubevirt is not None and host.kubevirt.ssh.service_type == "NodePort" else None
    if base is None:
        return None
    on_host = [v.name for v in cfg.vms if v.host == vm.host]
    return base + on_host.index(vm.name)


def ssh_service(vm: Vm, kv: KubevirtHost, node_port: int | None = None) -> dict:
    """The Service that exposes the guest's port 22 (masquerade forwards it to the guest)."""
    port: dict = {"name": "ssh", "port": 22, "targetPort": 22, "protocol": "TCP"}
    if kv.ssh.service_type == "NodePort" and node_port is not None:
        port["nodePort"] = node_port
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": names(vm).ssh_service, "namespace": kv.namespace, "labels": {**MANAGED_BY, VM_LABEL: vm.name}},
        "spec": {"type": kv.ssh.service_type, "selector": {VM_LABEL: vm.name}, "ports": [port]},
    }


def advertised_models(cfg: StackConfig, host: Host) -> tuple[list[str], list[str]]:
    """(models KubeVirt's plugin advertises, models the GPU Operator's sandbox plugin advertises) on this host."""
    kv = host.kubevirt
    used = sorted({d.model for vm in cfg.vms if vm.host == host.name for d in (*vm.gpus, *vm.nvswitches)})
    operator = sorted(set(kv.device_plugins.gpu_operator))
    ours = sorted(set(kv.device_plugins.kubevirt)) if kv.device_plugins.kubevirt is not None else [m for m in used if m not in operator]
    return ours, operator


def permitted_host_devices(cfg: StackConfig, hosts: list[Host]) -> list[dict]:
    """pciHostDevices for every model on these KubeVirt hosts, one entry per vendor:device ID."""
    rows: dict[tuple[str, str], bool] = {}
    for host in hosts:
        ours, operator = advertised_models(cfg, host)
        for model, external in [(m, False) for m in ours] + [(m, True) for m in operator]:
            for pci_id in device_model(model).pci_ids:
                rows[(pci_id, model)] = external
    return [
        {"pciVendorSelector": pci_id.upper(), "resourceName": device_model(model).resource, "externalResourceProvider": external}
        for (pci_id, model), external in sorted(rows.items())
    ]


def kubevirt_cr_patch(cfg: StackConfig, hosts: list[Host]) -> dict | None:
    """The server-side-apply patch of the KubeVirt CR; None when no host manages it.

    featureGates and pciHostDevices are atomic lists in the CRD (x-kubernetes-list-type: atomic),
    so an apply replaces them whole: hosts[].kubevirt.featureGates carries the gates the cluster
    already has, and this patch lists every permitted device of every managed host.
    """
    managed = [h for h in hosts if h.kubevirt is not None and h.kubevirt.manage_kubevirt_config]
    if not managed:
        return None
    first = managed[0].kubevirt
    gates = sorted(set(FEATURE_GATES) | {g for h in managed for g in h.kubevirt.feature_gates})
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
        "metadata": {"name": first.kubevirt_cr, "namespace": first.kubevirt_namespace},
        "spec": {"configuration": {
            "developerConfiguration": {"featureGates": gates},
            "permittedHostDevices": {"pciHostDevices": permitted_host_devices(cfg, managed)},
        }},
    }
