"""The config of a `kind: proxmox` host (hosts[].proxmox).

On the ground floor with the other models: StackConfig and its JSON schema need them. The checks that span
fields (credentials, Proxmox VE version minimums) are hypervisors/proxmox/checks.py's.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from config.base import Model
from config.types import NO_CREDENTIALS, Name, Word, url_type

ProxmoxEndpoint = url_type(("https",), "https://pve-1.lab.local:8006/", NO_CREDENTIALS)


class ProxmoxHost(Model):
    endpoint: ProxmoxEndpoint
    """The Proxmox VE API, https://<host>:8006/ (the provider's `endpoint`; without /api2/json). Credentials are the secrets gpu-stack:proxmoxPassword
    (root@pam's password) and, optionally, gpu-stack:proxmoxApiToken (docs/OPERATIONS.md, Proxmox VE hosts)."""
    insecure: bool = False
    """Accept a self-signed endpoint certificate (Proxmox VE's default pve-ssl.pem)."""
    node: Name
    """The Proxmox VE node (`pvecm nodes`, or the host name in the web UI's tree) the VM runs on. Passed-through devices are a node's, so a GPU VM is bound to it."""
    datastore: Word = "local-lvm"
    """Storage for the VM's root disk, its EFI vars disk and its cloud-init drive (content type images)."""
    snippets_datastore: Word = "local"
    """Storage with the snippets content type enabled (a directory storage): the cloud-init user-data and meta-data files are uploaded there over SSH."""
    bridge: Word = "vmbr0"
    """Linux bridge the VM's NIC attaches to."""
    image: Word = Field(examples=["local:import/ubuntu-22.04-server-cloudimg-amd64.qcow2"])
    """Volume id of the cloud image the root disk is imported from (the disk's import_from), e.g. local:import/jammy.qcow2; its guest must run cloud-init
    with the NoCloud datasource (Proxmox's cloud-init drive)."""
    ssh_user: Word = "root"
    """SSH user the provider uploads the snippets as (bpg: the API has no snippet upload); its key is gpu-stack:hypervisorSshPrivateKey, else
    gpu-stack:sshPrivateKey. A user other than root needs passwordless sudo for /usr/bin/tee into the snippets directory."""
    pve_version: Optional[str] = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$", examples=["9.1"])
    """Proxmox VE release on the node (`pveversion`: pve-manager/9.1.x). Set: the plan refuses fields this release lacks. At preview the provider's
    getVersion is checked too."""
