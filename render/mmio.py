"""Size of the q35 64-bit PCI hole and the guest physical address bits it needs.

The hole must hold every 64-bit BAR of every passed-through device. Each BAR
is naturally aligned, so the window is rounded up to a power of two, after at
least 1 GiB of headroom for bridges and the small BARs. This reproduces both
field notes: 8x H800 + 4 NVSwitch -> 2048G (seed 000), 1x P100 -> 32G
(seed 001's 64bitMMIOSizeGB).

QEMU also refuses a hole that ends above the guest CPU's physical address
limit ("phys-bits too low"). QEMU >= 7.1 relocates memory above 4 GiB to
1 TiB on AMD CPUs, so the worst-case end is 1 TiB + RAM + hole.
"""

from __future__ import annotations

from config.catalog import GIB, GPU_MODELS, MIB, NVSWITCH_MODELS
from config.models import Vm

HEADROOM_BYTES = 1 * GIB
TIB_BYTES = 1024 * GIB


def device_bar_bytes(vm: Vm) -> int:
    total = 0
    for gpu in vm.gpus:
        model = GPU_MODELS[gpu.model]
        bar1 = int(gpu.bar1_gib * GIB) if gpu.bar1_gib is not None else model.bar1_bytes
        total += bar1 + model.other_64bit_bar_bytes
    for sw in vm.nvswitches:
        model = NVSWITCH_MODELS[sw.model]
        total += sw.bar_mib * MIB if sw.bar_mib is not None else model.bar1_bytes + model.other_64bit_bar_bytes
    return total


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def hole64_gib_for(bar_bytes: int) -> int:
    """Smallest hole that holds this many bytes of 64-bit BARs; 0 for none."""
    if bar_bytes == 0:
        return 0
    return _next_pow2(bar_bytes + HEADROOM_BYTES) // GIB


def required_hole64_gib(vm: Vm) -> int:
    """Smallest hole that fits this VM's devices (catalog sizes); 0 when nothing is passed through."""
    return hole64_gib_for(device_bar_bytes(vm))


def hole64_gib(vm: Vm) -> int:
    return vm.mmio_hole64_gib if vm.mmio_hole64_gib is not None else required_hole64_gib(vm)


def phys_bits_needed(memory_gib: int, hole_gib: int) -> int:
    end = TIB_BYTES + memory_gib * GIB + hole_gib * GIB
    return max(40, (end - 1).bit_length())
