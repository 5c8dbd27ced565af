"""Host facts synthesised from a stack's own config, for previews against a libvirtd that lacks its GPUs.

The engine tests preview the libvirt stacks against this machine's libvirtd (qemu:///system). The
libvirt provider connects there when it is configured, and without facts the IOMMU preflight would
ask that libvirtd for the stacks' GPU PCI addresses, which it does not have ("... is not a PCI device
of host ..."). A facts file per host (GPU_STACK_HOST_FACTS) replaces those invokes
(stacks/hypervisors/libvirt/preflight.iommu_preflight): here it says what the config says and nothing more:

- every configured GPU and NVSwitch alone in its IOMMU group (group number: its bus, as the offline
  plan assumes, tools/mockrun.isolated_node_device), bound to vfio-pci, on the NUMA node the config
  gives it, with the catalog's PCI ID and class;
- its BARs from the config (gpus[].bar1Gib, nvswitches[].barMib) or config/catalog.py, as a sysfs
  `resource` file lists them (facts/host_facts.parse_resource reads them back to the same sizes);
- the hosts[] NUMA nodes (CPUs, memoryGib), physAddrBits, threadSiblings (no SMT when undeclared,
  which is what an undeclared threadSiblings means to the program), the IOMMU on and vfio-pci loaded;
- libvirtVersion / qemuVersion as declared, else UNDECLARED_VERSIONS.

The document has the shape scripts/host-facts.sh writes (format gpu-stack-host-facts/1, see
hosts/kv-gpu-node-1.facts.json) and is read back with facts/host_facts.load_host_facts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from config.catalog import GIB, MIB, device_model
from facts.host_facts import FORMAT, Bar, load_host_facts
from config.models import StackConfig
from config.types import format_cpu_list, parse_cpu_list

COLLECTED_AT = "2026-01-01T00:00:00Z"
UNDECLARED_VERSIONS = ("10.0.0", "8.2.2")
"""libvirt and QEMU of Ubuntu 24.04 (libvirt-daemon 10.0.0, qemu-system-x86 8.2.2), for a host whose
config does not declare them; render/hypervisor.py checks the domain's elements against them."""

NVIDIA = "0x10de"
CLASS_3D = "0x030200"  # PCI class 03 (display), subclass 02 (3D controller): data-centre GPUs
CLASS_BRIDGE = "0x068000"  # PCI class 06 (bridge), subclass 80 (other): NVSwitch
# include/linux/ioport.h: IORESOURCE_MEM | IORESOURCE_SIZEALIGN (0x40000); 64-bit prefetchable adds
# IORESOURCE_MEM_64 (0x100000), IORESOURCE_PREFETCH (0x2000) and the BAR's low flag bits (0xc)
FLAGS_32 = 0x40200
FLAGS_64_PREFETCH = 0x14220C
RESOURCE_LINES = 13  # BAR0-5, ROM, then bridge windows / SR-IOV BARs, as sysfs lists them for a GPU
BAR0_32 = 16 * MIB


def _pow2_parts(n: int) -> list[int]:
    """n bytes as power-of-two BAR sizes, largest first (48 MiB -> 32 MiB + 16 MiB)."""
    return [1 << b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1]


class _Space:
    """Non-overlapping, size-aligned BAR addresses: 32-bit BARs below 4 GiB, 64-bit ones from 2 TiB."""

    def __init__(self) -> None:
        self.low = 0xE000_0000
        self.high = 2 * 1024 * GIB

    def take(self, size: int, is_64bit: bool) -> int:
        at = self.high if is_64bit else self.low
        at = (at + size - 1) // size * size
        if is_64bit:
            self.high = at + size
        else:
            self.low = at + size
        return at


def _resource(bars: dict[int, tuple[int, bool]], space: _Space) -> str:
    lines = ["0x%016x 0x%016x 0x%016x" % (0, 0, 0)] * RESOURCE_LINES
    for index, (size, is_64bit) in sorted(bars.items()):
        start = space.take(size, is_64bit)
        lines[index] = "0x%016x 0x%016x 0x%016x" % (start, start + size - 1, FLAGS_64_PREFETCH if is_64bit else FLAGS_32)
    return "\n".join(lines) + "\n"


def _gpu_bars(gpu) -> dict[int, tuple[int, bool]]:
    """BAR0 32-bit; BAR1 the framebuffer aperture; the other 64-bit BARs (catalog) at BAR3 and BAR5."""
    model = device_model(gpu.model)
    bar1 = int(gpu.bar1_gib * GIB) if gpu.bar1_gib is not None else model.bar1_bytes
    bars = {0: (BAR0_32, False), 1: (bar1, True)}
    others = _pow2_parts(model.other_64bit_bar_bytes)
    if len(others) > 2:  # not the case for any catalog model; one BAR keeps the sum
        others = [model.other_64bit_bar_bytes]
    for index, size in zip((3, 5), others):
        bars[index] = (size, True)
    return bars


def _switch_bars(sw) -> dict[int, tuple[int, bool]]:
    """An NVSwitch's BAR0: 64-bit prefetchable (config/catalog.py NVSWITCH_MODELS)."""
    model = device_model(sw.model)
    size = sw.bar_mib * MIB if sw.bar_mib is not None else model.bar1_bytes + model.other_64bit_bar_bytes
    return {0: (size, True)}


def _nodedev_xml(address: str, cls: str, product_id: str | None, product: str, group: int, numa: int | None) -> str:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    name = "pci_" + address.replace(":", "_").replace(".", "_")
    pid = f" id='0x{product_id}'" if product_id else ""
    hx = f"domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'"
    return (f"<device>\n  <name>{name}</name>\n  <driver>\n    <name>vfio-pci</name>\n  </driver>\n"
            f"  <capability type='pci'>\n    <class>{cls}</class>\n    <domain>{int(domain, 16)}</domain>\n"
            f"    <bus>{int(bus, 16)}</bus>\n    <slot>{int(slot, 16)}</slot>\n    <function>{int(function, 16)}</function>\n"
            f"    <product{pid}>{product}</product>\n    <vendor id='{NVIDIA}'>NVIDIA Corporation</vendor>\n"
            f"    <iommuGroup number='{group}'>\n      <address {hx}/>\n    </iommuGroup>\n"
            + (f"    <numa node='{numa}'/>\n" if numa is not None else "")
            + "  </capability>\n</device>\n")


def host_facts_document(cfg: StackConfig, host_name: str) -> dict[str, Any]:
    """The facts document of one libvirt host of `cfg`, as scripts/host-facts.sh would write it for a host built as configured."""
    host = next(h for h in cfg.hosts if h.name == host_name)
    space = _Space()
    devices, groups = [], set()
    for vm in cfg.vms:
        if vm.host != host_name:
            continue
        for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
            for d in devs:
                model = device_model(d.model)
                group = int(d.address.split(":")[1], 16)
                while group in groups:  # two devices on one bus: still each alone
                    group += 256
                groups.add(group)
                pid = model.pci_ids[0].split(":")[1] if model.pci_ids else None
                bars = _gpu_bars(d) if kind == "gpus" else _switch_bars(d)
                devices.append({
                    "address": d.address,
                    "driver": "vfio-pci",
                    "nodedevXml": _nodedev_xml(d.address, CLASS_3D if kind == "gpus" else CLASS_BRIDGE, pid, model.name, group, d.numa_node),
                    "requested": True,
                    "resource": _resource(bars, space),
                })
    if host.thread_siblings:
        siblings, smt = list(host.thread_siblings), True
    else:
        cpus = sorted({c for n in host.numa_nodes for c in n.cpu_ids})
        siblings, smt = [format_cpu_list((c,)) for c in cpus], False
    libvirt_version = host.libvirt_version or UNDECLARED_VERSIONS[0]
    qemu_version = host.qemu_version or UNDECLARED_VERSIONS[1]
    return {
        "collectedAt": COLLECTED_AT,
        "collector": f"synthetic: tests/support/host_facts.py from the stack's config for host {host_name} "
                     "(isolated IOMMU groups, vfio-pci, NUMA and BARs as configured and in config/catalog.py)",
        "cpu": {"model": "synthetic", "physAddrBits": host.phys_addr_bits, "virtAddrBits": 57 if host.phys_addr_bits > 48 else 48},
        "devices": sorted(devices, key=lambda d: d["address"]),
        "format": FORMAT,
        "host": host_name,
        "iommu": {"cmdline": ["intel_iommu=on", "iommu=pt"], "enabled": True, "groups": len(devices)},
        "kernel": {"cmdline": "ro intel_iommu=on iommu=pt", "release": "synthetic"},
        "libvirt": {"libvirtVersion": libvirt_version, "qemuVersion": qemu_version, "uri": host.libvirt_uri or ""},
        "numaNodes": [{"cpus": format_cpu_list(parse_cpu_list(n.cpus)), "id": n.id, "memoryKib": n.memory_gib * 1024 * 1024}
                      for n in host.numa_nodes],
        "smt": {"active": smt, "siblings": siblings},
        "vfioPci": {"available": True, "loaded": True, "module": "synthetic"},
    }


def write_stack_host_facts(cfg: StackConfig, out_dir: Path) -> list[Path]:
    """One facts file per libvirt host of `cfg` that has VMs, written to out_dir/<host>.facts.json
    (each read back with load_host_facts, so a file the program would refuse never leaves here)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for host in cfg.hosts:
        if host.kind != "libvirt" or not any(vm.host == host.name for vm in cfg.vms):
            continue
        path = out_dir / f"{host.name}.facts.json"
        path.write_text(json.dumps(host_facts_document(cfg, host.name), indent=2, sort_keys=True) + "\n")
        load_host_facts(path)
        paths.append(path)
    return paths


def engine_stack_config(stack: str, libvirt_uri: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The engine-form config (values, secret keys) of the throwaway stack tools/engine.workspace makes:
    Pulumi.<stack>.yaml less its `secure:` values, libvirt hosts at `libvirt_uri`, placeholder secrets."""
    from tools import mockrun
    from tools.engine import PROJECT, placeholder_secret, stack_settings, with_libvirt_uri

    plain, secret_keys = stack_settings(stack)
    if libvirt_uri:
        plain = with_libvirt_uri(plain, libvirt_uri)
    values, _ = mockrun.config_values(plain, lambda key: key)
    for key in secret_keys:
        values[f"{PROJECT}:{key}"] = placeholder_secret(key)
    return values, sorted(f"{PROJECT}:{key}" for key in secret_keys)


def stack_host_facts(stack: str, out_dir: Path, libvirt_uri: str | None = None) -> list[Path]:
    """write_stack_host_facts for the stack as tools/engine.workspace configures it."""
    from tools.plan import stack_config

    return write_stack_host_facts(stack_config(*engine_stack_config(stack, libvirt_uri)), out_dir)


def mock_plan(stack: str, *, libvirt_uri: str | None = None, host_facts: list[Path] | None = None) -> list[dict]:
    """resources.json rows (tools/plan.resources_json) of the mock run of the same throwaway stack
    config, with the same facts, each command's script put back (resolve_scripts): the inputs the program sent."""
    from tools import mockrun
    from tools.plan import artifacts, resolve_scripts, resources_json

    values, secret_keys = engine_stack_config(stack, libvirt_uri)
    result = mockrun.run(values, secret_keys, stack=stack, preview=True, host_facts=[str(p) for p in host_facts or []])
    return resolve_scripts(json.loads(resources_json(result)), artifacts(result))


def catalog_bar_sizes(bars: tuple[Bar, ...]) -> tuple[int, int]:
    """(bar1_bytes, other_64bit_bar_bytes) as config/catalog.DeviceModel counts them: the largest 64-bit
    prefetchable BAR (the framebuffer aperture), and the sum of the other 64-bit BARs; 32-bit BARs sit below 4 GiB."""
    bar1 = max((b.size for b in bars if b.is_64bit and b.prefetchable), default=0)
    return bar1, sum(b.size for b in bars if b.is_64bit) - bar1
