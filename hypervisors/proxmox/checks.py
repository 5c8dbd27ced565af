"""Proxmox VE's config checks: a host's proxmox block, the credentials its VMs need, what the mapping cannot do.

Sources at the pinned releases (docs/SOURCES.md, Proxmox VE): qemu-server src/PVE/API2/Qemu.pm (who may set
which option), pve-manager PVE/HTTPServer.pm (a token's user is `user@realm!token`, never root@pam), bpg
v0.111.1 docs/index.md ("Permission check failed (user != root@pam)" with a token: use password auth).
"""

from __future__ import annotations

from config.errors import ConfigIssue
from config.models import Host, StackConfig, Vm
from hypervisors.proxmox.render import MAX_HOSTPCI, MAX_NUMA, pve_version_problems, root_only_fields
from render.mmio import hole64_gib
from render.vm_plan import hides_hypervisor

TOKEN_NOT_ROOT = ("Proxmox VE lets only root@pam set them, and an API token never is root@pam (qemu-server src/PVE/API2/Qemu.pm "
                  "$check_vm_modify_config_perm: \"only root can set '$opt' config\"; pve-manager PVE/HTTPServer.pm: a token's user is "
                  "root@pam!<token>)")


def _needs_root(vm: Vm) -> list[str]:
    return root_only_fields(hole64_gib(vm) > 0, bool(vm.gpus or vm.nvswitches), vm.numa.hugepages_1g)


def host_issues(hi: int, host: Host, vms: list, secrets: set[str]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    key = f"hosts[{hi}]"
    for field in ("libvirt_uri", "base_image", "host_key", "libvirt_version", "qemu_version"):
        if getattr(host, field) is not None:
            alias = Host.model_fields[field].alias
            issues.append(ConfigIssue(f"{key}.{alias}", f"not used by kind proxmox (the VM is created through {key}.proxmox.endpoint from {key}.proxmox.image); remove it"))
    if host.proxmox is None:
        issues.append(ConfigIssue(f"{key}.proxmox", "required for kind proxmox: endpoint, node and image (datastore, snippetsDatastore, bridge have defaults)"))
        return issues
    p = host.proxmox
    if "/api2/" in p.endpoint:
        issues.append(ConfigIssue(f"{key}.proxmox.endpoint", f"{p.endpoint}: give the server only, https://<host>:8006/; the provider adds /api2/json itself (bpg docs/index.md)"))
    if p.pve_version is not None:
        for vi, vm in vms:
            for problem in pve_version_problems(p.pve_version, bool(vm.gpus or vm.nvswitches), vm.numa.hugepages_1g):
                issues.append(ConfigIssue(f"{key}.proxmox.pveVersion", f"is {p.pve_version}; vms[{vi}] ({vm.name}): {problem}; upgrade the node (9.x recommended)"))
                break
    return issues


def stack_issues(cfg: StackConfig, secrets: set[str], by_host: dict) -> list[ConfigIssue]:
    """Credentials: root@pam's password wherever a VM needs a root-only field; a token alone is refused, naming why."""
    issues: list[ConfigIssue] = []
    used = [h for h in cfg.hosts if h.kind == "proxmox" and h.name in by_host]
    for host in used:
        rooted = [(vi, vm, _needs_root(vm)) for vi, vm in by_host[host.name]]
        rooted = [(vi, vm, f) for vi, vm, f in rooted if f]
        if "proxmoxPassword" in secrets:
            continue
        if rooted:
            vi, vm, fields = rooted[0]
            why = f"vms[{vi}] ({vm.name}) sets {', '.join(fields)}: {TOKEN_NOT_ROOT}"
            if "proxmoxApiToken" in secrets:
                issues.append(ConfigIssue("proxmoxPassword", f"gpu-stack:proxmoxApiToken alone cannot create this VM on {host.name}: {why}; "
                                                             "set root@pam's password with `pulumi config set --secret gpu-stack:proxmoxPassword`"))
            else:
                issues.append(ConfigIssue("proxmoxPassword", f"Proxmox VE host {host.name} needs root@pam's password: {why}; "
                                                             "set it with `pulumi config set --secret gpu-stack:proxmoxPassword`"))
            return issues
        if "proxmoxApiToken" not in secrets:
            issues.append(ConfigIssue("proxmoxApiToken", f"Proxmox VE host {host.name} needs credentials; set `pulumi config set --secret gpu-stack:proxmoxApiToken` "
                                                         "(user@realm!tokenid=secret) or root@pam's password as gpu-stack:proxmoxPassword"))
            return issues
    return issues


def vm_issues(hi: int, host: Host, vi: int, vm: Vm) -> list[ConfigIssue]:
    issues = []
    key = f"vms[{vi}]"
    for block in ("vsphere", "kubevirt"):
        if getattr(vm, block) is not None:
            issues.append(ConfigIssue(f"{key}.{block}", f"host {host.name} is kind proxmox; this block is for VMs on kind {block} hosts"))
    if vm.network.name != "default":
        issues.append(ConfigIssue(f"{key}.network.name", f"not used on kind proxmox: the NIC attaches to hosts[{hi}].proxmox.bridge; remove it"))
    if vm.numa.expose_gpu_affinity:
        issues.append(ConfigIssue(f"{key}.numa.exposeGpuAffinity", "libvirt only (pcie-expander-bus per guest node): Proxmox VE puts every hostpci on its own "
                                                                  "root port on pcie.0 (qemu-server PCI.pm print_pcie_root_port) and has no expander option; remove it"))
    if hides_hypervisor(vm):  # the neutral rule: vms[].kvmHidden, else the catalog's consumer GPUs
        where = f"{key}.kvmHidden" if vm.kvm_hidden is not None else f"{key}.gpus"
        issues.append(ConfigIssue(where, "cannot hide the hypervisor on kind proxmox: PVE's `cpu: hidden=1` is not exposed by pulumi-proxmoxve 8.3.0 (bpg v0.111.1 "
                                         "has no such cpu field), and a second -cpu in args replaces Proxmox's own (qemu-server 9.1.14 changelog); use data-centre GPUs "
                                         "or another kind"))
    functions = len(vm.gpus) + len(vm.nvswitches)
    if functions > MAX_HOSTPCI:
        issues.append(ConfigIssue(f"{key}.gpus", f"{functions} devices (gpus and nvswitches); a Proxmox VE VM has at most {MAX_HOSTPCI} hostpci slots (hostpci0-15)"))
    if vm.numa.cells and len(vm.numa.cells) > MAX_NUMA:
        issues.append(ConfigIssue(f"{key}.numa.cells", f"{len(vm.numa.cells)} cells; Proxmox VE has at most {MAX_NUMA} (numa0-7)"))
    return issues
