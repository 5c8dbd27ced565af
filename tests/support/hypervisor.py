"""What only the tests ask of render/hypervisor.py's table."""

from __future__ import annotations

from render.hypervisor import MINIMUMS, _fmt


def minimum_versions(elements: list[str]) -> tuple[str, str]:
    """(libvirt, QEMU) the elements need together, for docs and error messages."""
    lib = max((MINIMUMS[e].libvirt for e in elements if MINIMUMS[e].libvirt), default=(0,))
    qemu = max((MINIMUMS[e].qemu for e in elements if MINIMUMS[e].qemu), default=(0,))
    return _fmt(lib), _fmt(qemu)
