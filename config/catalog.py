"""What we know about common datacenter GPUs and NVSwitches, for MMIO sizing.

Seed 000 failed with `PCI I/O region invalid` because the 64-bit PCI hole was
too small for eight H800s; seed 001 needed `64bitMMIOSizeGB=32` for one P100.
The hole must hold every 64-bit BAR of every passed-through device: BAR1 (the
framebuffer aperture, the big one, as `nvidia-smi -q` reports under
"BAR1 Memory Usage / Total") and BAR3 (32 MiB on every NVIDIA datacenter GPU
since Kepler). BAR0 (the registers) is 32-bit on the A100 and does not count;
on the B200 it is 64-bit prefetchable (64 MiB) and does. Sizes here can be
overridden per device in the config (`gpus[].bar1Gib`, `nvswitches[].barMib`)
for boards with resizable BAR or unusual VBIOS settings.

Which BAR sizes are cited from a real capture (tests/test_catalog_bars.py
derives them from the copies in tests/fixtures/lspci/, with
facts/host_facts.parse_lspci_regions):
- A100-SXM4-80GB: `lspci -v` in a QEMU guest (linux-pci list, 2021-07);
- B200-SXM-180GB: `lspci -vvv` on an HGX B200 host (Ubicloud blog, 2025-12-15).
- H100-SXM5-80GB: BAR0 16 MiB, BAR2 128 GiB, BAR4 32 MiB, all three 64-bit
  prefetchable (so BAR0 counts too: 48 MiB besides BAR1), as `lspci -vv` of an
  H100 host shows them (fastfetch-cli/fastfetch issue 1658, Region 0/2/4; read,
  not copied) and as the HGX H100 host-facts fixture (tests/fixtures/host-facts/)
  carries them; tests/test_catalog_bars.py derives the number from that fixture.
  The H20 shows the same three in `lspci -v` (NVIDIA/nvtrust issue 128), and the
  other GH100 parts are given the same 48 MiB (same chip; uncited, and 16 MiB per
  GPU more than BAR3 alone is the safe side of the hole).
BAR1 is also checked against every `nvidia-smi -q` capture in
tests/fixtures/nvidia-smi/ ("BAR1 Memory Usage / Total"): A100-SXM4-80GB/40GB,
H100-SXM5-80GB, L40S, P100-PCIE-16GB.
The others are as the project has carried them (docs/FIELD-FACTS.md), and
B300-SXM-288GB and NVSwitch-Gen4 have none: see BAR_SIZE_REQUIRED.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
GIB = 1024 * MIB


# GPU architectures, oldest first. Which kernel modules each can run (NVIDIA Data Center
# driver installation guide, "Kernel Modules"; NVIDIA Technical Blog, "NVIDIA Transitions
# Fully Towards Open-Source GPU Kernel Modules", 2024-07):
# - Maxwell, Pascal, Volta: proprietary only (the open modules need the GSP, first in Turing);
# - Turing, Ampere, Ada Lovelace, Hopper: both; NVIDIA recommends open, the default from R560;
# - Blackwell (and Grace Hopper): open only, "the proprietary drivers are unsupported";
# - a system that mixes older and newer GPUs: proprietary.
ARCHITECTURES = ("pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell")
PROPRIETARY_ONLY = frozenset({"pascal", "volta"})
OPEN_ONLY = frozenset({"blackwell"})
OPEN_MODULES_SINCE_BRANCH = 515  # first driver branch that ships the open flavour


@dataclass(frozen=True)
class DeviceModel:
    name: str
    bar1_bytes: int
    other_64bit_bar_bytes: int
    consumer: bool = False  # GeForce: the driver refuses to run if it sees a hypervisor
    architecture: str = ""  # one of ARCHITECTURES for GPUs; empty for NVSwitches
    pci_ids: tuple[str, ...] = ()
    """vendor:device IDs (lowercase hex, `lspci -nn`); empty where no source was found: such a model cannot go on a KubeVirt host."""
    resource: str = ""
    """KubeVirt resource name (permittedHostDevices.pciHostDevices[].resourceName, domain.devices.gpus[].deviceName)."""


def _resource(name: str) -> str:
    """nvidia.com/<MODEL>: the catalog name with the characters a resource name may not hold as _."""
    return "nvidia.com/" + name.replace("-", "_").replace(".", "_")


def _gpu(name: str, bar1_gib: float, architecture: str, consumer: bool = False, other_64bit_mib: int = 32) -> DeviceModel:
    assert architecture in ARCHITECTURES, architecture
    ids = tuple(f"10de:{d}" for d in PCI_DEVICE_IDS.get(name, ()))
    return DeviceModel(name, int(bar1_gib * GIB), other_64bit_mib * MIB, consumer, architecture, ids, _resource(name))


# NVIDIA (vendor 10de) device IDs per model, for KubeVirt's pciVendorSelector. Sources:
# - [cap] lspci -nn captures in tests/fixtures (host-facts/lspci-Dnn.8xH100-SXM-4xNVSwitch.kvm-host.txt: 2330, 22a3;
#   lspci/lspci-v+dmesg.8xA100-SXM4-80GB.qemu-guest-BAR-failure.txt: 20b2; for 2901 the HGX B200 host of
#   lspci/lspci-vvv-Region.1xB200-HGX.ubicloud-blog.txt, whose post shows `lspci -k -d 10de:2901` and vfio-pci.ids=10de:2901);
# - [node] a real node's report: 3182 for the B300 SXM6 AC in NVIDIA/gpu-operator issue 2231 (8x "NVIDIA B300 SXM6 AC",
#   "PCI ID: 3182", driver 580.105.08, the validator's "failed to find device with id '3182'");
# - [pci.ids] the PCI ID Repository (https://pci-ids.ucw.cz, vendor 10de) as tabulated, name by name, in a public
#   Go table that maps NVIDIA device IDs to NVML product names ("Device IDs follow the public PCI ID database"),
#   and for 2204 an `lspci -nn` line "GA102 [GeForce RTX 3090] [10de:2204]" in a public write-up.
# - [nodedev] a real `virsh nodedev-dumpxml` of a P100 PCIe 16GB (issue 22 item 8): <product id='0x15f8'>.
# Every ID is also in the PCI ID Repository under the name PCI_ID_NAMES gives (pciutils/pciids @
# c1c12547d626ebf05fd0223144ad87fab5e95d06, pci.ids Version 2026.08.22); tests/test_catalog_pci_ids.py checks each
# against the installed pci.ids (Debian 12's package pci.ids 0.0~2023.04.11-1, Version 2023.04.10, in CI), where
# IDs newer than that file (2335, 2329, 26b9, 2901, 3182, 22a3) are absent and are not checked.
# A model left out has no ID we could source (A800, NVSwitch Gen2): a KubeVirt host refuses it by key.
PCI_DEVICE_IDS: dict[str, tuple[str, ...]] = {
    "H800-SXM5-80GB": ("2324",),  # pci.ids GH100 [H800]
    "H100-SXM5-80GB": ("2330",),  # cap
    "H100-PCIE-80GB": ("2331",),  # pci.ids GH100 [H100 PCIe]
    "H100-NVL-94GB": ("2321",),  # pci.ids GH100 [H100L 94GB]
    "H200-SXM-141GB": ("2335",),  # pci.ids GH100 [H200 SXM 141GB]
    "H20-96GB": ("2329",),  # pci.ids GH100 [H20]
    "A100-SXM4-80GB": ("20b2",),  # cap
    "A100-SXM4-40GB": ("20b0",),  # pci.ids GA100 [A100 SXM4 40GB]
    "A100-PCIE-80GB": ("20b5",),  # pci.ids GA100 [A100 PCIe 80GB]
    "A100-PCIE-40GB": ("20b1", "20f1"),  # pci.ids: both are GA100 [A100 PCIe 40GB]
    "L40S": ("26b9",),  # pci.ids AD102GL [L40S]
    "L40": ("26b5",),  # pci.ids AD102GL [L40]
    "L4": ("27b8",),  # pci.ids AD104GL [L4]
    "A40": ("2235",),  # pci.ids GA102GL [A40]
    "A30": ("20b7",),  # pci.ids GA100GL [A30 PCIe]
    "A10": ("2236",),  # pci.ids GA102GL [A10]
    "T4": ("1eb8",),  # pci.ids TU104GL [Tesla T4]
    "V100-SXM2-32GB": ("1db5",),  # pci.ids GV100GL [Tesla V100 SXM2 32GB]
    "V100-PCIE-16GB": ("1db4",),  # pci.ids GV100GL [Tesla V100 PCIe 16GB]
    "B200-SXM-180GB": ("2901",),  # cap; pci.ids GB100 [B200]
    "B300-SXM-288GB": ("3182",),  # node
    "RTX-3090": ("2204",),  # pci.ids / lspci -nn GA102 [GeForce RTX 3090]
    "RTX-4090": ("2684",),  # pci.ids AD102 [GeForce RTX 4090]
    "P100-PCIE-16GB": ("15f8",),  # nodedev; pci.ids GP100GL [Tesla P100 PCIe 16GB]
}

PCI_ID_NAMES: dict[str, str] = {
    "2324": "GH100 [H800]",
    "2330": "GH100 [H100 SXM5 80GB]",
    "2331": "GH100 [H100 PCIe]",
    "2321": "GH100 [H100L 94GB]",
    "2335": "GH100 [H200 SXM 141GB]",
    "2329": "GH100 [H20]",
    "20b2": "GA100 [A100 SXM4 80GB]",
    "20b0": "GA100 [A100 SXM4 40GB]",
    "20b5": "GA100 [A100 PCIe 80GB]",
    "20b1": "GA100 [A100 PCIe 40GB]",
    "20f1": "GA100 [A100 PCIe 40GB]",
    "26b9": "AD102GL [L40S]",
    "26b5": "AD102GL [L40]",
    "27b8": "AD104GL [L4]",
    "2235": "GA102GL [A40]",
    "20b7": "GA100GL [A30 PCIe]",
    "2236": "GA102GL [A10]",
    "1eb8": "TU104GL [Tesla T4]",
    "1db5": "GV100GL [Tesla V100 SXM2 32GB]",
    "1db4": "GV100GL [Tesla V100 PCIe 16GB]",
    "2901": "GB100 [B200]",
    "3182": "GB110 [B300 SXM6 AC]",
    "2204": "GA102 [GeForce RTX 3090]",
    "2684": "AD102 [GeForce RTX 4090]",
    "15f8": "GP100GL [Tesla P100 PCIe 16GB]",
    "22a3": "GH100 [H100 NVSwitch]",
}
"""NVIDIA device ID -> its name in the PCI ID Repository (pciutils/pciids @ c1c12547, Version 2026.08.22), for every catalog ID."""


def default_kernel_modules(architectures: set[str]) -> str | None:
    """open or proprietary for GPUs of these architectures; None when no flavour runs them all."""
    if architectures & PROPRIETARY_ONLY and architectures & OPEN_ONLY:
        return None
    if architectures & PROPRIETARY_ONLY:
        return "proprietary"  # includes NVIDIA's advice for mixed old/new systems
    return "open"


GH100_OTHER_64BIT_MIB = 16 + 32
"""GH100 (Hopper) 64-bit BARs besides BAR1: BAR0 16 MiB and BAR4 32 MiB, both 64-bit prefetchable (module docstring)."""

GPU_MODELS: dict[str, DeviceModel] = {
    m.name: m
    for m in (
        _gpu("H800-SXM5-80GB", 128, "hopper", other_64bit_mib=GH100_OTHER_64BIT_MIB),
        _gpu("H100-SXM5-80GB", 128, "hopper", other_64bit_mib=GH100_OTHER_64BIT_MIB),
        _gpu("H100-PCIE-80GB", 128, "hopper", other_64bit_mib=GH100_OTHER_64BIT_MIB),
        _gpu("H100-NVL-94GB", 128, "hopper", other_64bit_mib=GH100_OTHER_64BIT_MIB),
        _gpu("H200-SXM-141GB", 256, "hopper", other_64bit_mib=GH100_OTHER_64BIT_MIB),
        _gpu("H20-96GB", 128, "hopper", other_64bit_mib=GH100_OTHER_64BIT_MIB),
        _gpu("A100-SXM4-80GB", 128, "ampere"),
        _gpu("A100-SXM4-40GB", 64, "ampere"),
        _gpu("A100-PCIE-80GB", 128, "ampere"),
        _gpu("A100-PCIE-40GB", 64, "ampere"),
        _gpu("A800-SXM4-80GB", 128, "ampere"),
        _gpu("L40S", 64, "ada"),
        _gpu("L40", 64, "ada"),
        _gpu("L4", 32, "ada"),
        _gpu("A40", 64, "ampere"),
        _gpu("A30", 32, "ampere"),
        _gpu("A10", 32, "ampere"),
        _gpu("T4", 0.25, "turing"),
        _gpu("V100-SXM2-32GB", 32, "volta"),
        _gpu("V100-PCIE-16GB", 16, "volta"),
        _gpu("P100-PCIE-16GB", 16, "pascal"),
        _gpu("RTX-3090", 0.25, "ampere", consumer=True),
        _gpu("RTX-4090", 0.25, "ada", consumer=True),
    )
}

# Third-generation NVSwitch (HGX H100/H800): BAR0 is 32 MiB, 64-bit prefetchable.
NVSWITCH_MODELS: dict[str, DeviceModel] = {
    m.name: m
    for m in (
        DeviceModel("NVSwitch-Gen3", 0, 32 * MIB, pci_ids=("10de:22a3",), resource=_resource("NVSwitch-Gen3")),  # cap: GH100 [H100 NVSwitch]
        DeviceModel("NVSwitch-Gen2", 0, 32 * MIB, resource=_resource("NVSwitch-Gen2")),  # no sourced ID
    )
}


# --- day 2 (issue 16): Blackwell parts and NVLink generations -----------------
# Kept apart from the tables above so it merges cleanly with the real-hardware
# work on the same file.
#
# B200-SXM-180GB: BAR0 64 MiB, BAR2 256 GiB, BAR4 32 MiB, all 64-bit prefetchable,
# from a real `lspci -vvv` of an HGX B200 host (tests/fixtures/lspci/
# lspci-vvv-Region.1xB200-HGX.ubicloud-blog.txt; tests/test_catalog_bars.py derives
# these two numbers from it). 256 GiB covers the 179 GiB (183359 MiB) nvidia-smi reports.
#
# Still without a cited size, so stacks/checks.py requires them from the config
# (gpus[].bar1Gib / nvswitches[].barMib, read from the host's `lspci -vv`):
# - B300-SXM-288GB: no capture, `lspci` or `nvidia-smi -q` "BAR1 Memory Usage /
#   Total", was found. The only figure seen is a code comment in chutesai/sek8s
#   (guest GpuProfile, "512 GiB: confirmed from lspci Region 2 on am-b300-61"), not
#   a capture, so it is not used. Its other 64-bit BARs are taken as the 32 MiB of
#   BAR3 (uncited: the B200's 64-bit BAR0 suggests 96 MiB; 8 x 64 MiB stays inside
#   the hole's 1 GiB headroom, render/mmio.py).
# - NVSwitch-Gen4 (the fourth-generation NVSwitch of HGX B200/B300, NVLink 5): no
#   BAR size was found. NVIDIA's Fabric Manager guide says fourth-generation
#   NVSwitches share the InfiniBand switch architecture and are configured by NVLSM;
#   third-party code for HGX B200/B300 hosts (chutesai/sek8s, a Rex::GPU test) says
#   the host's lspci shows ConnectX bridge functions (15b3) for them rather than a
#   10de NVSwitch, so what `nvswitches[]` must name on these boards is also unsettled.

BLACKWELL_GPUS = ("B200-SXM-180GB", "B300-SXM-288GB")
NVLINK5_SWITCHES = ("NVSwitch-Gen4",)
"""The NVLink 5 switch of HGX B200/B300 (fourth-generation NVSwitch)."""

GPU_MODELS["B200-SXM-180GB"] = _gpu("B200-SXM-180GB", 256, "blackwell", other_64bit_mib=64 + 32)  # open kernel modules only
GPU_MODELS["B300-SXM-288GB"] = _gpu("B300-SXM-288GB", 0, "blackwell")  # BAR1 from the config (BAR_SIZE_REQUIRED)
for _name in NVLINK5_SWITCHES:
    NVSWITCH_MODELS[_name] = DeviceModel(_name, 0, 0)

BAR_SIZE_REQUIRED = frozenset(("B300-SXM-288GB", *NVLINK5_SWITCHES))
"""Models whose BAR sizes must come from the config (no cited catalog value)."""

NVLINK_GENERATION: dict[str, int] = {
    **{m: 5 for m in BLACKWELL_GPUS},
    **{m: 4 for m in ("H800-SXM5-80GB", "H100-SXM5-80GB", "H200-SXM-141GB", "H20-96GB")},
    **{m: 3 for m in ("A100-SXM4-80GB", "A100-SXM4-40GB", "A800-SXM4-80GB")},
    **{m: 2 for m in ("V100-SXM2-32GB",)},
}
"""NVLink generation of the SXM parts (NVSwitch systems). Generation 5 needs the NVLink subnet manager (NVLSM) next to Fabric Manager."""


def nvlink_generation(gpu_models: list[str]) -> int:
    """The highest NVLink generation among a VM's GPUs; 0 for PCIe parts."""
    return max((NVLINK_GENERATION.get(m, 0) for m in gpu_models), default=0)


def device_model(name: str) -> DeviceModel:
    """A GPU or NVSwitch model by its catalog name (the names of the two tables do not overlap)."""
    return GPU_MODELS.get(name) or NVSWITCH_MODELS[name]


# --- issue 29 part 3: which board a GPU sits on, and its NVSwitches -------------
# Source: NVIDIA Fabric Manager User Guide, release 2.3 (document history 2.3, March 4, 2025),
# https://docs.nvidia.com/hgx-platforms/fabric-manager-user-guide/index.html, read in a stored copy:
# - "NVSwitch-Based Systems": DGX/HGX A100 8-GPU: "a GPU baseboard, with eight NVIDIA A100 GPUs, and six
#   second generation NVSwitches"; DGX/HGX H100 8-GPU: "one GPU baseboard with eight NVIDIA H100 GPUs and four
#   NVSwitches" (third generation); DGX/HGX B200/B300 8-GPU: "two NVSwitch ASICs and eight B300/B200/B100 GPUs"
#   (fourth generation).
# - "NVIDIA Server Architectures": HGX A800 uses second-generation NVSwitches; HGX H800, DGX/HGX H200 and HGX
#   H20 third-generation ones; its notes: "the steps for NVIDIA HGX A800 is same as the steps for NVIDIA HGX
#   A100" and "the steps for NVIDIA HGX H800, DGX H200, NVIDIA HGX H200, NVIDIA HGX H20 are the same as the
#   steps for NVIDIA HGX H100", only the number of GPU NVLinks differing.
# - §6 "Full Passthrough Virtualization Model", "Supported Virtual Machine Configurations": VM GPUs ->
#   NVSwitches. A100 (12 NVLinks per GPU, 36 per switch): 16 -> 12, 8 -> 6, 4 -> 3, 2 -> 1, 1 -> 0 (16 needs
#   two baseboards). H100 (18 NVLinks per GPU, 64 per switch): 8 -> 4, 1 -> 0 ("Need to disable GPU NVLinks");
#   its note: "For DGX H200, NVIDIA HGX H200, and NVIDIA HGX H20 systems, the same H100 VM configuration,
#   NVLink topology, and NVSwitch assignment apply. For NVIDIA HGX H800 systems, the same assignment applies".
#   B200/B300: 8 -> "2 (Indirectly) Actual devices passed through is CX7 bridge devices", 1 -> 0; §1.6.4 and
#   "Additional Steps for NVIDIA HGX B200/B300 Systems": "NVSwitches do not appear as PCIe devces. They are
#   behind a CX7 bridge device and the corresponding four CX7 device physical functions must be passed to the
#   guest VM." No other VM size is listed for these boards: a partial board gets the NVSwitches the table
#   gives its size, and a size the table does not list has no full-passthrough partition.
# V100-SXM2-32GB has no entry: the guide's V100 board (HGX-2, six first-generation NVSwitches) carries
# "V100 SXM3 32GB" parts, and no source read here says which board an SXM2 V100 sits on (DGX-1's has no
# NVSwitch), so its NVSwitches are not checked.


@dataclass(frozen=True)
class Baseboard:
    name: str
    gpus: int
    """GPUs on one baseboard."""
    nvswitches: int
    """NVSwitches on one baseboard."""
    switch_model: str
    """Catalog name of its NVSwitch (NVSWITCH_MODELS)."""
    partitions: tuple[tuple[int, int], ...]
    """Full passthrough: (VM GPUs, NVSwitches the VM gets), the Fabric Manager guide's §6.1 table."""
    switches_are_pci_devices: bool = True
    """False on HGX B200/B300: the NVSwitches sit behind a CX7 bridge and are not PCIe devices."""


HGX_A100 = Baseboard("HGX A100 8-GPU", 8, 6, "NVSwitch-Gen2", ((16, 12), (8, 6), (4, 3), (2, 1), (1, 0)))
HGX_H100 = Baseboard("HGX H100 8-GPU", 8, 4, "NVSwitch-Gen3", ((8, 4), (1, 0)))
HGX_B200 = Baseboard("HGX B200/B300 8-GPU", 8, 2, "NVSwitch-Gen4", ((8, 2), (1, 0)), switches_are_pci_devices=False)

NVSWITCH_BOARD: dict[str, Baseboard] = {
    "A100-SXM4-80GB": HGX_A100,
    "A100-SXM4-40GB": HGX_A100,
    "A800-SXM4-80GB": HGX_A100,
    "H100-SXM5-80GB": HGX_H100,
    "H800-SXM5-80GB": HGX_H100,
    "H200-SXM-141GB": HGX_H100,
    "H20-96GB": HGX_H100,
    "B200-SXM-180GB": HGX_B200,
    "B300-SXM-288GB": HGX_B200,
}
"""The NVSwitch baseboard each SXM GPU model sits on (Fabric Manager User Guide 2.3, above)."""

PCIE_GPUS = frozenset({
    "H100-PCIE-80GB", "H100-NVL-94GB", "A100-PCIE-80GB", "A100-PCIE-40GB", "L40S", "L40", "L4", "A40", "A30", "A10",
    "T4", "V100-PCIE-16GB", "P100-PCIE-16GB", "RTX-3090", "RTX-4090",
})
"""PCIe cards: no NVSwitch baseboard (H100 NVL pairs by NVLink bridge, not a switch)."""


# --- issue 27: the interconnect, for the burn-in gate's expected all-reduce bandwidth ----------
# What each figure rests on (render/burnin.py derives the node's expected busbw from these):
# - [nvlink-s] `nvidia-smi nvlink -s` of an H100 80GB HBM3 SXM: 18 links at 26.562 GB/s each
#   (tests/fixtures/nvidia-smi/nvidia-smi-nvlink-s.1xH100-SXM-80GB-VM.590.48.01.txt; tests/test_burnin.py
#   counts them from that copy). NVIDIA's health-validation reference (docs.nvidia.com/health-validation,
#   checks/nvlink, `nvlink_bandwidth_count_speed`) expects the same: 18 links, "H100: 26562" MB/s per link.
# - [fm] the Fabric Manager User Guide 2.3 (above): A100 has 12 NVLinks per GPU, H100 18; HGX H200 and H20
#   have "the same H100 VM configuration, NVLink topology, and NVSwitch assignment"; HGX H800 and HGX A800
#   follow H100 and A100 with "only the number of GPU NVLinks differing" (the guide does not give the number).
# - [nvls] NCCL's maintainer (sjeaugey, NVIDIA/nccl-tests#212, 2024-05-06): on 8 H100 on NVSwitch the
#   NVLink SHARP all-reduce (the default there) peaks at busBw ~480 GB/s, only at large sizes; that is the
#   per-GPU NVLink line rate, 18 x 26.562 = 478.1 GB/s. The 8x H100 burn-in capture measured 470.7 at 2 GiB.
# - [a100-run] a real 8x A100-SXM4-40GB bare-metal all-reduce (OCI BM.GPU4.8; tests/fixtures/burn-in/
#   all_reduce_perf.8xA100-SXM4-40GB-OCI-BM.GPU4.8.single-size-10G.txt): busbw 235.43 at 10 GiB. A100 has no
#   NVLink SHARP and no per-link rate was read from a primary source, so the measured run is the reference.
# - [pcie] the PCIe generation of the PCIe cards, from `nvidia-smi -q` captures in tests/fixtures/nvidia-smi/
#   ("PCIe Generation / Max", `-q -x` <max_link_gen>): L40S 4 (1xL40S VM, 595.80), P100 3 (1xP100 VM,
#   510.47.03). The A10G capture shows 4, but the A10G is not a catalog model. Others: None (no capture).
# Not sourced, so config gives the figure (burnIn.expectedBusbwGbps, stacks/checks.py refuses a node without it):
# - H800-SXM5-80GB and A800-SXM4-80GB: reduced NVLink (export-control parts). Secondary pages say 400 GB/s
#   bidirectional per GPU; no NVIDIA datasheet or capture was read (FIELD-FACTS "Burn-in"), so no number here.
# - B200/B300 (NVLink 5): no per-link rate or all-reduce run read.
# - V100-SXM2: hybrid cube-mesh, no NVSwitch; only pairwise runs were captured (NV2 42.4, NV1 21.9 GB/s).
# - every PCIe card: no PCIe-only all-reduce run is in the captures.


@dataclass(frozen=True)
class Interconnect:
    nvlink_generation: int
    """0: no NVLink between the GPUs of a node."""
    nvlink_links: int | None
    """NVLinks per GPU; None where no source gives the count."""
    nvlink_link_gbps: float | None
    """Per link and direction, GB/s; None where no source gives it."""
    nvswitch: bool
    """The GPUs sit on an NVSwitch baseboard (NVSWITCH_BOARD)."""
    pcie_generation: int | None
    """PCIe generation of the card's host link, where a capture shows it (PCIe cards only)."""
    reference_busbw_gbps: float | None
    """All-reduce bus bandwidth a healthy full board reaches, GB/s (derived or measured, see `source`); None: config."""
    source: str
    """Where the figures come from (the [tags] above)."""


H100_LINK_GBPS = 26.562
"""NVLink 4 per link and direction, as `nvidia-smi nvlink -s` prints it for H100 SXM [nvlink-s]."""
A100_8GPU_MEASURED_BUSBW = 235.43
"""Out-of-place busbw at 10 GiB, 8x A100-SXM4-40GB bare metal [a100-run]."""


def _interconnect(model: str) -> Interconnect:
    gen = NVLINK_GENERATION.get(model, 0)
    switch = model in NVSWITCH_BOARD
    if model in ("H100-SXM5-80GB", "H200-SXM-141GB", "H20-96GB"):
        return Interconnect(gen, 18, H100_LINK_GBPS, switch, None, round(18 * H100_LINK_GBPS, 1),
                            "18 links [nvlink-s; fm: H200/H20 share H100's NVLink topology] x 26.562 GB/s [nvlink-s], "
                            "the NVLS all-reduce peak [nvls: NVIDIA/nccl-tests#212]")
    if model in ("A100-SXM4-40GB", "A100-SXM4-80GB"):
        return Interconnect(gen, 12, None, switch, None, A100_8GPU_MEASURED_BUSBW,
                            "12 links [fm]; measured 8x A100-SXM4-40GB all-reduce, 235.43 GB/s at 10 GiB [a100-run]"
                            + ("" if model == "A100-SXM4-40GB" else " (same NVLink generation and link count)"))
    pcie = {"L40S": 4, "P100-PCIE-16GB": 3}.get(model)
    if gen:
        return Interconnect(gen, None, None, switch, None, None,
                            "reduced NVLink, link count not in a primary source" if model in ("H800-SXM5-80GB", "A800-SXM4-80GB")
                            else "no sourced NVLink rate or all-reduce run")
    return Interconnect(0, None, None, False, pcie, None,
                        "PCIe card" + (f", Gen{pcie} (`nvidia-smi -q` capture)" if pcie else "") + "; no PCIe-only all-reduce run sourced")


INTERCONNECT: dict[str, Interconnect] = {m: _interconnect(m) for m in GPU_MODELS}
"""Per GPU model: NVLink generation and links, NVSwitch or not, PCIe generation, and the sourced busbw (or None)."""

BUSBW_REQUIRED = frozenset(m for m, i in INTERCONNECT.items() if i.reference_busbw_gbps is None)
"""Models whose expected all-reduce busbw must come from the config (burnIn.expectedBusbwGbps)."""
