"""vSphere hosts (`hosts[].kind: vsphere`): provider and preflight.

Like the libvirt IOMMU preflight, everything here runs before any VM is
declared: one explicit pulumi_vsphere.Provider per host (credentials from the
secrets vsphereUser / vspherePassword), then data-source lookups of the
datacenter, host, resource pool, datastore, network and template, and of the
PCI devices to pass through. A lookup that finds nothing is a ConfigError
naming the key, so preview fails before a VM is created.

getHostPciDevice (terraform-provider-vsphere data source vsphere_host_pci_device)
filters the host's PCI devices by name regex, vendor and class and returns
the first match; it does not read the passthrough state (HostPciPassthruInfo).
So gpu-stack looks up each GPU model configured on a host by its device name,
checks that the host has it, at one of the configured addresses, and takes
the id the host reports. Passthrough "Active" is a host prerequisite listed in
hosts[].vsphere.pciDevices (docs/OPERATIONS.md); vSphere refuses a device that
is not, when the VM is reconfigured.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_vsphere as vsphere

from hypervisors.vsphere.machine import VsphereTarget
from hypervisors.vsphere.render import NVIDIA_VENDOR_ID, Inventory, TemplateInfo, model_name_regex
from config.models import Host, StackConfig
from config.errors import ConfigError, ConfigIssue

PASSTHROUGH_HINT = "Host > Manage > Hardware > PCI Devices: select it, Toggle passthrough to Active, reboot the host"


def vsphere_provider(host: Host, secrets: dict[str, pulumi.Output[str]]) -> vsphere.Provider:
    target = host.vsphere
    return vsphere.Provider(
        f"vsphere-{host.name}",
        vsphere_server=target.endpoint,
        user=secrets["vsphereUser"],
        password=secrets["vspherePassword"],
        allow_unverified_ssl=target.allow_unverified_ssl,
    )


@dataclass(frozen=True)
class _Resolved:
    inventory: Inventory
    template: TemplateInfo


def _lookup(hi: int, host: Host, provider: vsphere.Provider, issues: list[ConfigIssue]) -> _Resolved | None:
    t = host.vsphere
    invoke = pulumi.InvokeOptions(provider=provider)
    key = f"hosts[{hi}].vsphere"

    def found(field: str, call, what: str):
        try:
            result = call()
        except Exception as e:  # the provider's "not found" errors
            issues.append(ConfigIssue(f"{key}.{field}", f"{what} not found on {t.endpoint}: {str(e).splitlines()[0]}"))
            return None
        if not getattr(result, "id", None):
            issues.append(ConfigIssue(f"{key}.{field}", f"{what} not found on {t.endpoint}"))
            return None
        return result

    dc = found("datacenter", lambda: vsphere.get_datacenter(name=t.datacenter, opts=invoke), f"datacenter {t.datacenter!r}")
    if dc is None:
        return None
    esxi = found("host", lambda: vsphere.get_host(name=t.host, datacenter_id=dc.id, opts=invoke), f"host {t.host!r}")
    pool = None
    if t.cluster:
        cluster = found("cluster", lambda: vsphere.get_compute_cluster(name=t.cluster, datacenter_id=dc.id, opts=invoke), f"cluster {t.cluster!r}")
        pool = cluster.resource_pool_id if cluster else None
    elif esxi is not None:
        pool = esxi.resource_pool_id
    ds = found("datastore", lambda: vsphere.get_datastore(name=t.datastore, datacenter_id=dc.id, opts=invoke), f"datastore {t.datastore!r}")
    net = found("network", lambda: vsphere.get_network(name=t.network, datacenter_id=dc.id, opts=invoke), f"network {t.network!r}")
    if esxi is None or pool is None or ds is None or net is None:
        return None
    inventory = Inventory(datacenter_id=dc.id, host_id=esxi.id, resource_pool_id=pool, datastore_id=ds.id, network_id=net.id)
    if t.template.vm is not None:
        tpl = found("template.vm", lambda: vsphere.get_virtual_machine(name=t.template.vm, datacenter_id=dc.id, opts=invoke), f"VM template {t.template.vm!r}")
        if tpl is None:
            return None
        disk = tpl.disks[0] if tpl.disks else None
        template = TemplateInfo(
            guest_id=tpl.guest_id, scsi_type=tpl.scsi_type, uuid=tpl.id,
            disk_gib=int(disk.size) if disk else 0,
            thin_provisioned=disk.thin_provisioned if disk else None,
            eagerly_scrub=disk.eagerly_scrub if disk else None,
        )
    else:
        tpl = found("template.ovf", lambda: vsphere.get_ovf_vm_template(
            name=f"gpu-stack-ovf-probe-{host.name}", remote_ovf_url=t.template.ovf, host_system_id=esxi.id,
            resource_pool_id=pool, datastore_id=ds.id, allow_unverified_ssl_cert=t.allow_unverified_ssl,
            ovf_network_map={t.template.ovf_network: net.id}, opts=invoke,
        ), f"OVF {t.template.ovf!r}")
        if tpl is None:
            return None
        template = TemplateInfo(guest_id=tpl.guest_id, scsi_type=tpl.scsi_type)
    return _Resolved(inventory, template)


def _pci_device_ids(hi: int, host: Host, cfg: StackConfig, host_id: str, provider: vsphere.Provider, issues: list[ConfigIssue]) -> dict[str, tuple[str, ...]]:
    """pci_device_ids per VM on this host, each model checked against getHostPciDevice."""
    invoke = pulumi.InvokeOptions(provider=provider)
    wanted: dict[str, list[tuple[str, str]]] = {}  # model -> [(key, address)]
    for vi, vm in enumerate(cfg.vms):
        if vm.host != host.name:
            continue
        for kind, devices in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
            for di, dev in enumerate(devices):
                wanted.setdefault(dev.model, []).append((f"vms[{vi}].{kind}[{di}].address", dev.address))
    for model, items in wanted.items():
        regex = model_name_regex(model)
        try:
            dev = vsphere.get_host_pci_device(host_id=host_id, vendor_id=NVIDIA_VENDOR_ID, name_regex=regex, opts=invoke)
            dev_id, dev_name, error = (dev.id or "").lower(), dev.name, ""
        except Exception as e:  # the bridge may report "no device" as an invoke failure instead of an empty id
            dev_id, dev_name, error = "", "", f" (getHostPciDevice: {str(e).splitlines()[0]})"
        if not dev_id:
            for key, address in items:
                issues.append(ConfigIssue(key, f"host {host.name} has no NVIDIA PCI device whose name matches {regex!r} ({model}) for {address}{error}; "
                                               f"check the address and model, and that the GPU is seen by the host ({PASSTHROUGH_HINT})"))
        elif dev_id not in [a for _, a in items]:
            issues.append(ConfigIssue(items[0][0], f"host {host.name} reports its {model} (name {dev_name!r}) at {dev_id}, which hosts[{hi}].vsphere.pciDevices "
                                                   f"and this VM do not list; use the host's address (Host > Manage > Hardware > PCI Devices)"))
    # The host's id of a PCI device is its address (HostPciDevice.id, "0000:03:00.0"): the
    # configured addresses, the first of each model confirmed by the host above.
    return {vm.name: tuple(d.address for d in (*vm.gpus, *vm.nvswitches)) for vm in cfg.vms if vm.host == host.name}


def vsphere_preflight(cfg: StackConfig, providers: dict[str, vsphere.Provider]) -> dict[str, VsphereTarget]:
    """Target (inventory ids, template, pci_device_ids) per VM on a vSphere host; ConfigError naming the key otherwise."""
    issues: list[ConfigIssue] = []
    targets: dict[str, VsphereTarget] = {}
    for hi, host in enumerate(cfg.hosts):
        if host.name not in providers:
            continue
        resolved = _lookup(hi, host, providers[host.name], issues)
        if resolved is None:
            continue
        ids = _pci_device_ids(hi, host, cfg, resolved.inventory.host_id, providers[host.name], issues)
        for vm_name, pci in ids.items():
            targets[vm_name] = VsphereTarget(resolved.inventory, resolved.template, pci)
    if issues:
        raise ConfigError(issues)
    return targets
