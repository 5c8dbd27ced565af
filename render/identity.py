"""Identifiers derived from names, stable across runs and updates."""

from __future__ import annotations

import hashlib
import uuid


def derived_mac(stack: str, vm: str) -> str:
    """A locally administered QEMU MAC (52:54:00:xx:xx:xx) from stack and VM name.

    Seed 000 lost its DHCP lease and IP when the MAC changed; this never changes
    unless the VM is renamed.
    """
    digest = hashlib.sha256(f"gpu-stack/{stack}/{vm}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


# Fixed forever: changing it changes every domain's UUID, so every libvirt domain
# would be replaced (the stylesheet that carries the UUID is ForceNew).
MACHINE_UUID_NAMESPACE = uuid.UUID("7921148d-6c56-482b-b443-8615859c9f35")


def derived_machine_uuid(project: str, stack: str, vm: str) -> str:
    """A name-based (version 5) UUID from Pulumi project, stack and VM name.

    The libvirt domain gets it as its <uuid>, so a `pulumi up` after a failed
    start redefines its own leftover domain instead of being refused (libvirt
    refuses a define whose name exists with another UUID; hypervisors/libvirt/domain_xslt.py
    cites where). Another project or stack that names a VM alike gets another
    UUID, so its domain is never taken over. Never changes unless the VM is
    renamed.
    """
    return str(uuid.uuid5(MACHINE_UUID_NAMESPACE, f"gpu-stack/{project}/{stack}/{vm}"))


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
