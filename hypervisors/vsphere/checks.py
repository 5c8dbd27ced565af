"""vSphere's config checks: a host's vsphere block and credentials, what passthrough on ESXi needs of its VMs."""

from __future__ import annotations

from config.errors import ConfigIssue
from config.models import Host, StackConfig
from config.vsphere import VmVsphere
from hypervisors.vsphere.render import in_vmware_static_range


def host_issues(hi: int, host: Host, vms: list, secrets: set[str]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    key = f"hosts[{hi}]"
    if host.kubevirt is not None:
        issues.append(ConfigIssue(f"{key}.kubevirt", "only for kind kubevirt; set kind: kubevirt or remove this block"))
    for field in ("libvirt_uri", "base_image", "host_key"):
        if getattr(host, field) is not None:
            alias = Host.model_fields[field].alias
            issues.append(ConfigIssue(f"{key}.{alias}", f"not used by kind vsphere (the VM comes from {key}.vsphere.template); remove it"))
    if host.vsphere is None:
        issues.append(ConfigIssue(f"{key}.vsphere", "required for kind vsphere: endpoint, datacenter, host, datastore, network, template and pciDevices"))
        return issues
    t = host.vsphere.template
    if host.vsphere.datacenter == "ha-datacenter":
        issues.append(ConfigIssue(f"{key}.vsphere.datacenter", "ha-datacenter is a standalone ESXi host's own: terraform-provider-vsphere clones and deploys OVF/OVA only through vCenter Server, "
                                  "not over a direct ESXi connection; add the host to a vCenter and name that vCenter (endpoint) and its datacenter"))
    if (t.vm is None) == (t.ovf is None):
        issues.append(ConfigIssue(f"{key}.vsphere.template", f"set exactly one of {key}.vsphere.template.vm (a VM template to clone, needs vCenter) and {key}.vsphere.template.ovf (an OVF/OVA URL)"))
    return issues


def stack_issues(cfg: StackConfig, secrets: set[str], by_host: dict) -> list[ConfigIssue]:
    """The credentials every vSphere host with VMs needs."""
    issues = []
    used = [h.name for h in cfg.hosts if h.kind == "vsphere" and h.name in by_host]
    for secret in ("vsphereUser", "vspherePassword"):
        if used and secret not in secrets:
            issues.append(ConfigIssue(secret, f"vSphere host {used[0]} needs credentials; set them with `pulumi config set --secret gpu-stack:{secret}`"))
    return issues


def vm_issues(hi: int, host: Host, vi: int, vm) -> list[ConfigIssue]:
    issues = []
    key = f"vms[{vi}]"
    if vm.kubevirt is not None:
        issues.append(ConfigIssue(f"{key}.kubevirt", f"host {host.name} is kind {host.kind}; this block is for VMs on kind kubevirt hosts"))
    opts = vm.vsphere or VmVsphere()
    if vm.network.mac and not in_vmware_static_range(vm.network.mac):
        issues.append(ConfigIssue(f"{key}.network.mac", f"{vm.network.mac} is outside VMware's static range 00:50:56:00:00:00-00:50:56:3f:ff:ff, which "
                                                        "vSphere requires for a manual MAC; unset it to derive one"))
    if vm.numa.hugepages_1g:
        issues.append(ConfigIssue(f"{key}.numa.hugepages1g", "libvirt only; ESXi backs guest memory with large pages itself"))
    if vm.numa.expose_gpu_affinity:
        issues.append(ConfigIssue(f"{key}.numa.exposeGpuAffinity", "libvirt only (pcie-expander-bus); on vSphere set vsphere.numCoresPerSocket and numa.hostNodes"))
    cps = opts.num_cores_per_socket
    if cps is not None and vm.vcpus % cps:
        issues.append(ConfigIssue(f"{key}.vsphere.numCoresPerSocket", f"{cps} does not divide vcpus {vm.vcpus}; vSphere needs whole sockets"))
    enabled = set(host.vsphere.pci_devices) if host.vsphere is not None else set()
    if host.vsphere is not None:
        for kind, devices in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
            for di, dev in enumerate(devices):
                if dev.address not in enabled:
                    issues.append(ConfigIssue(
                        f"{key}.{kind}[{di}].address",
                        f"{dev.address} is not in hosts[{hi}].vsphere.pciDevices (host {host.name}); set its passthrough to Active on the host "
                        "(Host > Manage > Hardware > PCI Devices > Toggle passthrough, then reboot the host) and list it there",
                    ))
    return issues
