"""The Proxmox VE mapping of a VmPlan: inputs of pulumi_proxmoxve.VmLegacy (pulumi-proxmoxve 8.3.0, bpg v0.111.1).

Pure: no Pulumi. The neutral derivations (MMIO size, placement, MAC, cloud-init, devices,
firmware) come from render/vm_plan.py; this module only puts them in bpg's
`proxmox_virtual_environment_vm` fields, which the bridge names VmLegacy (provider/resources.go
convertName() at v8.3.0; the framework `proxmoxve.Vm` has no hostpci, numa, efi_disk,
initialization or kvm_arguments). Sources, read at the pinned releases (docs/SOURCES.md, Proxmox VE):

- machine "q35": `hostpciN: pcie=1` dies without it (qemu-server src/PVE/QemuServer/PCI.pm
  parse_hostpci_devices: "q35 machine model is not enabled");
- bios "ovmf" + efi_disk type 4m, pre_enrolled_keys false: no Microsoft keys enrolled, Secure Boot
  off with GPUs (qemu-server src/PVE/QemuServer/OVMF.pm selects the -ms vars only for pre-enrolled-keys=1);
- one hostpci per passed-through PCI device (its functions of the IOMMU group joined by ';', which
  bpg's vm.go splits into `host=a;b`), pcie and rombar always explicit: bpg v0.111.1 vm.go
  vmGetHostPCIDeviceObjects() sends `pcie=`, `rombar=`, `x-vga=` from d.Get(), which has no Default,
  so an unset rombar reaches Proxmox as rombar=0, not its documented default 1;
- numa: one numaN per guest cell with hostnodes and policy bind, cpu.numa on (Memory.pm: hugepages
  need numa, hostnodes and a policy per node);
- cpu.type host (host-phys-bits: QEMU target/i386/host-cpu.c; OVMF trusts CPUID phys-bits >= 41,
  edk2 OvmfPkg/Library/PlatformInitLib/MemDetect.c);
- cpu.affinity: the host CPUs of every cell, one process-wide `taskset --cpu-list --all-tasks`
  (qemu-server QemuServer.pm); Proxmox has no per-vCPU pinning field (render/numa.py pins 1:1 on
  libvirt): a vCPU may run on any CPU of the VM's set, on either node of a two-node VM;
- memory.hugepages "1024" where vms[].numa.hugepages1g; floating 0 (no balloon: VFIO pins all RAM);
- the MMIO window: kvm_arguments (PVE `args`), the only way at qemu-server 9.2.6, which has no
  pci-hole64 or PciMmio64 option anywhere in src/ (KVM_ARGUMENT_REASONS);
- the stable MAC on the NIC; the machine UUID as SMBIOS uuid;
- cloud-init through snippets (user_data_file_id: the SSH host key cannot go through user_account).
"""

from __future__ import annotations

import shlex
from typing import Any

from config.models import Vm
from config.proxmox import ProxmoxHost
from config.types import format_cpu_list, pci_parts, version_key
from render.numa import guest_topology
from render.vm_plan import VmPlan

MAX_HOSTPCI = 16
"""hostpci0..hostpci15: qemu-server PCI.pm $MAX_HOSTPCI_DEVICES = 16; bpg vm.go maxResourceVirtualEnvironmentVMHostPCIDevices = 16."""
MAX_NUMA = 8
"""numa0..numa7: bpg vm.go maxResourceVirtualEnvironmentVMNUMADevices; qemu-server Memory.pm $MAX_NUMA = 8."""

KVM_ARGUMENT_REASONS: dict[str, str] = {
    "-global q35-pcihost.pci-hole64-size": (
        "sizes QEMU's q35 64-bit PCI hole to the window derived from the devices' BARs (render/mmio.py, the libvirt backend's pci-hole64-size); "
        "qemu-server 9.2.6 has no option for it (no pci-hole64 anywhere in src/), so it goes in `args`, appended verbatim to the QEMU command line "
        "(QemuServer.pm); with cpu type host QEMU's own phys-bits check agrees with the plan"),
    "-fw_cfg name=opt/ovmf/X-PciMmio64Mb": (
        "tells OVMF to place a 64-bit MMIO aperture of the same size (edk2 OvmfPkg/Library/PlatformInitLib/MemDetect.c PlatformGetFirstNonAddress); "
        "without it OVMF keeps its small default window whenever it does not trust CPUID phys-bits (<= 40, e.g. no 1 GiB pages), and the GPUs' BARs "
        "do not fit: the black screen / 'PCI I/O region invalid' of the issue (qemu-server 9.1.7 changelog warns of the 40-bit limit)"),
}
"""Every raw QEMU argument gpu-stack sets through kvm_arguments, with why; the plan writes them into proxmox.json."""

MIN_PVE: dict[str, tuple[tuple[int, int], str]] = {
    "the provider": ((8, 0), "bpg/terraform-provider-proxmox v0.111.1 README: Proxmox VE 9.x supported, 8.x with limits, 7.x not supported"),
    "cpu.affinity": ((7, 3), "qemu-server 7.2-7 (2022-11-13, PVE 7.3) added `affinity`"),
    "efi_disk.pre_enrolled_keys": ((7, 0), "qemu-server 7.0-16 (2021-10-05) added efitype=4m and pre-enrolled-keys"),
    "hostpcis (16)": ((6, 0), "qemu-server 6.0-9 (2019-09): up to 16 PCI(e) devices"),
    "memory.hugepages": ((6, 0), "qemu-server 6.0-10: 1 GiB hugepages fallback (hugepages since 4.0-83)"),
}
"""The Proxmox VE release each field gpu-stack sets needs (qemu-server debian/changelog; PVE major by distribution: bullseye 7, bookworm 8, trixie 9)."""


def pve_version_problems(release: str, devices: bool, hugepages: bool) -> list[str]:
    """What a node on Proxmox VE `release` ("9.1", "8.4.1") lacks of what a VM's mapping sets (with devices passed through, with hugepages)."""
    have = version_key(release)[:2]
    used = ["the provider", "efi_disk.pre_enrolled_keys"]
    if devices:
        used += ["cpu.affinity", "hostpcis (16)"]
    if hugepages:
        used.append("memory.hugepages")
    return [f"{field} needs Proxmox VE {need[0]}.{need[1]} or later ({why})"
            for field, (need, why) in sorted(MIN_PVE.items(), key=lambda kv: kv[1][0], reverse=True)
            if field in used and have < need]


def kvm_arguments(plan: VmPlan) -> list[tuple[str, str]]:
    """(argument, key of KVM_ARGUMENT_REASONS) for the VM's `args`; none when nothing is passed through."""
    if not plan.mmio64_gib:
        return []
    return [
        (f"-global q35-pcihost.pci-hole64-size={plan.mmio64_gib}G", "-global q35-pcihost.pci-hole64-size"),
        (f"-fw_cfg name=opt/ovmf/X-PciMmio64Mb,string={plan.mmio64_gib * 1024}", "-fw_cfg name=opt/ovmf/X-PciMmio64Mb"),
    ]


def kvm_arguments_text(plan: VmPlan) -> str | None:
    """PVE `args`: split by qemu-server with PVE::Tools::split_args (shell words), so every word here is plain (shlex round-trips it)."""
    args = [a for a, _ in kvm_arguments(plan)]
    if not args:
        return None
    text = " ".join(args)
    assert " ".join(shlex.split(text)) == text, text
    return text


def root_only_fields(mmio: bool, devices: bool, hugepages: bool) -> list[str]:
    """The fields of a VM's mapping Proxmox lets only root@pam (by password or ticket, never an API token) set:
    qemu-server src/PVE/API2/Qemu.pm $check_vm_modify_config_perm ("only root can set '$opt' config") and
    check_hostpci_perm (hostpci with host= rather than a cluster mapping)."""
    fields = []
    if mmio:
        fields.append("kvm_arguments (args: the 64-bit MMIO window)")
    if devices:
        fields += ["hostpcis[].id (raw host PCI devices)", "cpu.affinity"]
    if hugepages:
        fields.append("memory.hugepages")
    return fields


def pci_devices(hostdevs: tuple[str, ...]) -> list[str]:
    """hostpci ids: the functions the IOMMU preflight resolved, grouped per PCI device (bus:slot), function 0 first,
    joined by ';' (one hostpci, one guest slot, as Proxmox passes a multi-function device)."""
    by_device: dict[tuple[int, int, int], list[str]] = {}
    for address in hostdevs:
        by_device.setdefault(pci_parts(address)[:3], []).append(address)
    return [";".join(sorted(fns, key=lambda a: pci_parts(a)[3])) for fns in by_device.values()]


def hostpcis(hostdevs: tuple[str, ...]) -> list[dict[str, Any]]:
    """One hostpci block per device. rombar 1 for every catalog device (config/catalog.py has no device whose ROM must be hidden;
    PVE's own default, sent explicitly because bpg sends an unset one as 0); pcie 1: a PCIe root port on q35; no x-vga (compute GPUs)."""
    return [{"device": f"hostpci{i}", "id": ids, "pcie": True, "rombar": True, "xvga": False} for i, ids in enumerate(pci_devices(hostdevs))]


def numas(plan: VmPlan) -> list[dict[str, Any]]:
    """numaN per guest cell: its vCPUs (ranges joined by ';', PVE's format), memory in MiB, bound to its host node."""
    return [{"device": f"numa{c.guest_id}", "cpus": format_cpu_list(c.vcpus).replace(",", ";"), "memory": c.memory_mib,
             "hostnodes": str(c.host_node), "policy": "bind"} for c in plan.placement.cells]


def cpu(plan: VmPlan) -> dict[str, Any]:
    sockets, cores, threads = guest_topology(plan.placement)
    out: dict[str, Any] = {"type": "host", "sockets": sockets, "cores": cores * threads, "numa": True}
    # PVE has no threads-per-core: with SMT pairs the guest sees cores, the pairs still share host cores through the affinity set
    if plan.devices:
        out["affinity"] = format_cpu_list([c for cell in plan.placement.cells for c in cell.host_cpus])
    return out


def vm_inputs(plan: VmPlan, vm: Vm, host: ProxmoxHost, hostdevs: tuple[str, ...],
              user_data_file_id: Any, meta_data_file_id: Any) -> dict[str, Any]:
    """Keyword arguments of pulumi_proxmoxve.VmLegacy (nested blocks as plain dicts, snake_case)."""
    memory: dict[str, Any] = {"dedicated": plan.memory_mib, "floating": 0}
    if plan.hugepages_1g:
        memory["hugepages"] = "1024"
    args: dict[str, Any] = {
        "node_name": host.node,
        "name": plan.name,
        "tags": ["gpu-stack"],
        "machine": "q35",
        "bios": "ovmf" if plan.firmware == "efi" else "seabios",
        "operating_system": {"type": "l26"},
        "cpu": cpu(plan),
        "numas": numas(plan),
        "memory": memory,
        "smbios": {"uuid": plan.machine_uuid},
        "disks": [{"interface": "scsi0", "datastore_id": host.datastore, "import_from": host.image, "size": plan.disk_gib, "file_format": "raw"}],
        "network_devices": [{"bridge": host.bridge, "model": "virtio", "mac_address": plan.mac}],
        "initialization": {
            "datastore_id": host.datastore,
            "interface": "ide2",
            "user_data_file_id": user_data_file_id,
            "meta_data_file_id": meta_data_file_id,
            "ip_configs": [{"ipv4": {"address": "dhcp"}}],
        },
    }
    if plan.firmware == "efi":
        args["efi_disk"] = {"datastore_id": host.datastore, "file_format": "raw", "type": "4m", "pre_enrolled_keys": plan.secure_boot}
    if hostdevs:
        args["hostpcis"] = hostpcis(hostdevs)
    text = kvm_arguments_text(plan)
    if text:
        args["kvm_arguments"] = text
    if not vm.network.address:
        # the address comes from the guest agent (the image must run qemu-guest-agent); with vms[].network.address nothing waits on it
        args["agent"] = {"enabled": True}
    return args
