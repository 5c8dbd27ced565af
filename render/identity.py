"""Identifiers derived from names, stable across runs and updates."""

from __future__ import annotations

import hashlib


def derived_mac(stack: str, vm: str) -> str:
    """A locally administered QEMU MAC (52:54:00:xx:xx:xx) from stack and VM name.

    Seed 000 lost its DHCP lease and IP when the MAC changed; this never changes
    unless the VM is renamed.
    """
    digest = hashlib.sha256(f"gpu-stack/{stack}/{vm}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
