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


VMWARE_STATIC_MAC_FIRST = "00:50:56:00:00:00"
VMWARE_STATIC_MAC_LAST = "00:50:56:3f:ff:ff"


def in_vmware_static_range(mac: str) -> bool:
    """vSphere accepts a manual (static) MAC only in 00:50:56:00:00:00-00:50:56:3F:FF:FF."""
    return mac.startswith("00:50:56:") and int(mac[9:11], 16) <= 0x3F


def derived_vmware_mac(stack: str, vm: str) -> str:
    """A MAC in VMware's static range (00:50:56:00:00:00-3f:ff:ff) from stack and VM name.

    Same digest as derived_mac; the fourth octet keeps its low six bits. Never
    changes unless the VM is renamed (use_static_mac on the VirtualMachine).
    """
    digest = hashlib.sha256(f"gpu-stack/{stack}/{vm}".encode()).digest()
    return f"00:50:56:{digest[0] & 0x3F:02x}:{digest[1]:02x}:{digest[2]:02x}"


JOIN_TOKEN_MARKER = "# gpu-stack-join-token: "


def split_join_token_output(stdout: str) -> str:
    """The bootstrap token the join-token phase printed ([a-z0-9]{6}.[a-z0-9]{16}); empty if none."""
    tokens = [line[len(JOIN_TOKEN_MARKER):].strip() for line in stdout.splitlines() if line.startswith(JOIN_TOKEN_MARKER)]
    return tokens[-1] if tokens else ""


def split_kubeconfig_output(stdout: str) -> tuple[str, str]:
    """(kubeconfig, ca cert hash) from the kubeconfig phase's output."""
    marker = "# gpu-stack-ca-cert-hash: "
    lines = stdout.splitlines(keepends=True)
    config = "".join(line for line in lines if not line.startswith(marker))
    hashes = [line[len(marker):].strip() for line in lines if line.startswith(marker)]
    return config, hashes[-1] if hashes else ""
