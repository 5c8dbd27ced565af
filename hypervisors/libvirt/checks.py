"""libvirt's config checks: a host's connection and base image, its VMs' firmware, libvirt's default network."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from config.errors import ConfigIssue
from config.models import Host
from hypervisors.libvirt import connection

DEFAULT_NETWORK = ipaddress.ip_network("192.168.122.0/24")
"""What libvirt's stock `default` network hands out, assumed for a VM on it without an address."""


def host_issues(hi: int, host: Host, vms: list, secrets: set[str]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    key = f"hosts[{hi}]"
    if host.libvirt_uri is None:
        issues.append(ConfigIssue(f"{key}.libvirtUri", "required for kind libvirt, e.g. qemu+ssh://root@gpu-host-1/system"))
    else:
        issues += _ssh_issues(key, host)
    if host.base_image is None:
        issues.append(ConfigIssue(f"{key}.baseImage", "required for kind libvirt: the cloud image (qcow2) root disks are cloned from"))
    if host.vsphere is not None:
        issues.append(ConfigIssue(f"{key}.vsphere", f"only for kind vsphere ({key}.kind is libvirt); set {key}.kind: vsphere or remove this block"))
    if host.kubevirt is not None:
        issues.append(ConfigIssue(f"{key}.kubevirt", f"only for kind kubevirt ({key}.kind is {host.kind}); set {key}.kind: kubevirt or remove this block"))
    return issues


def _ssh_issues(key: str, host: Host) -> list[ConfigIssue]:
    """A qemu+ssh URI the libvirt provider can use, and the host's key pinned (hypervisors/libvirt/connection.py)."""
    if not connection.is_ssh(host.libvirt_uri):
        if host.host_key is not None:
            return [ConfigIssue(f"{key}.hostKey", f"only for a qemu+ssh libvirtUri ({key}.libvirtUri {host.libvirt_uri} does not use SSH); remove it")]
        return []
    issues = [ConfigIssue(f"{key}.libvirtUri", f"{host.libvirt_uri} {p}") for p in connection.uri_problems(host.libvirt_uri)]
    if host.host_key is None:
        hostname = urlsplit(host.libvirt_uri).hostname or "HOST"
        issues.append(ConfigIssue(f"{key}.hostKey", f"required for a qemu+ssh libvirtUri: the libvirt provider checks the hypervisor's SSH host key against it; "
                                                    f"get it with `ssh-keyscan -t ed25519 {hostname}` (the part after the host name) and compare its fingerprint "
                                                    "with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host"))
    return issues


def vm_issues(hi: int, host: Host, vi: int, vm) -> list[ConfigIssue]:
    issues = []
    if vm.kubevirt is not None:
        issues.append(ConfigIssue(f"vms[{vi}].kubevirt", f"host {host.name} is kind {host.kind}; this block is for VMs on kind kubevirt hosts"))
    if vm.vsphere is not None:
        issues.append(ConfigIssue(f"vms[{vi}].vsphere", f"host {host.name} is kind libvirt; this block is for VMs on kind vsphere hosts"))
    return issues


def firmware_issues(vi: int, vm) -> list[ConfigIssue]:
    """libvirt VMs boot the host's OVMF build (hosts[].firmware.code): vms[].firmware does not choose."""
    issues = []
    key = f"vms[{vi}].firmware"
    fw = vm.firmware
    if fw.type != "efi":
        issues.append(ConfigIssue(f"{key}.type", f"libvirt VMs boot OVMF (hosts[].firmware.code); {fw.type} is not supported there"))
    if fw.secure_boot:
        issues.append(ConfigIssue(f"{key}.secureBoot", "on libvirt Secure Boot follows the OVMF build in hosts[].firmware.code; set that instead"))
    return issues


def default_network(vm) -> tuple[ipaddress.IPv4Network, str] | None:
    """The network a VM without an address is assumed on: libvirt's `default` hands out DEFAULT_NETWORK."""
    if vm.network.name == "default":
        return DEFAULT_NETWORK, "libvirt's default network"
    return None
