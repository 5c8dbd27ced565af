"""`gpu-stack doctor`'s checks: seed 003's ten-minute diagnosis as pure functions.

`diagnose(expected, evidence)` takes what the doctor collected (command output
from the guest and the hypervisor, JSON from the Kubernetes API and from
Prometheus through the API server's service proxy) and what the stack says
should be there, and returns ordered results in the seed's order: hypervisor,
guest driver, runtime, Kubernetes, workloads (classified by seed 003's
decision tree, section 2.1), monitoring. Each result is PASS, WARN, FAIL or
SKIP (not applicable here) with the evidence line it is based on and, when it
is not PASS, the fix (from the seed or from docs/OPERATIONS.md).

Nothing here runs a command: the commands are constants (`GUEST_COMMANDS`,
host templates) so the tool that runs them can check each one against
`is_read_only()` before sending it.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable
from xml.etree import ElementTree

from convergence.analysis import selector_matches, tolerates
from render.iommu import MEMBER_BLOCKS, MEMBER_BRIDGE, group_member_role
from doctor.nvidia_smi import (
    LIST_LINE as _LIST_LINE,
    XidEvent,
    normalize_pci,
    parse_list,
    parse_nvlink_status,
    parse_topo_matrix,
    parse_xid_lines,
    query_gpus,
)

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
# Every command the doctor sends to a guest: read-only, exact strings (`sudo -n` never prompts).
GUEST_COMMANDS: dict[str, str] = {
    "nvidia-smi-L": "nvidia-smi -L",
    "nvidia-smi-q": "nvidia-smi -q",
    "nvidia-smi-topo": "nvidia-smi topo -m",
    "nvidia-smi-nvlink": "nvidia-smi nvlink -s",
    "modules": "cat /proc/modules",
    "fabricmanager": "systemctl status nvidia-fabricmanager.service --no-pager --lines=20",
    "dmesg": "sudo -n dmesg",
    "nvidia-ctk": "nvidia-ctk --version",
    "cdi": "nvidia-ctk cdi list",
    "containerd-config": "sudo -n containerd config dump",
    "docker-daemon": "cat /etc/docker/daemon.json",
    "kubelet-checkpoint": "sudo -n cat /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint",
    # drift (check_drift): the loaded kernel module and the one installed on disk (what the next boot loads)
    "driver-loaded": "cat /proc/driver/nvidia/version",
    "driver-installed": "modinfo -F version nvidia",
}

# drift: installed package versions, as scripts/guest/lib.sh pkg_version reads them ({pkgs}: package names from
# the config and render/nvidia_packages.py, space-separated). One line per installed package; dpkg-query says
# "no packages found matching X" on stderr, rpm "package X is not installed" on stdout, for the others.
PACKAGE_COMMAND_TEMPLATES: dict[str, str] = {
    "ubuntu": "dpkg-query -W -f='${{Package}} ${{Version}}\\n' {pkgs}",
    "rhel": "rpm -q --qf '%{{NAME}} %{{VERSION}}\\n' {pkgs}",
}
_PKG = r"[a-z0-9][a-z0-9.+-]*"
_PACKAGE_PATTERNS = [
    re.compile("^" + re.escape(t.format(pkgs="{pkgs}")).replace(r"\{pkgs\}", f"{_PKG}(?: {_PKG})*") + "$")
    for t in PACKAGE_COMMAND_TEMPLATES.values()
]


def package_command(family: str, packages: Iterable[str]) -> str:
    return PACKAGE_COMMAND_TEMPLATES[family].format(pkgs=" ".join(packages))


# On the hypervisor ({addr}: a host PCI address from the config, {domain}: the VM's name).
HOST_COMMAND_TEMPLATES: dict[str, str] = {
    "dumpxml": "virsh -c qemu:///system dumpxml {domain}",
    "driver": "readlink /sys/bus/pci/devices/{addr}/driver",
    "iommu-group": "ls /sys/bus/pci/devices/{addr}/iommu_group/devices",
    "iommu-group-id": "readlink /sys/bus/pci/devices/{addr}/iommu_group",
    # each member's PCI class (…/devices/<member>/class:0x060400), so a bridge is skipped as the preflight skips it
    "iommu-group-class": "grep -H . /sys/bus/pci/devices/{addr}/iommu_group/devices/*/class",
}

_ADDR = r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"
_DOMAIN = r"[a-z0-9][a-z0-9-]{0,62}"
_HOST_PATTERNS = [
    re.compile("^" + re.escape(t).replace(r"\{addr\}", _ADDR).replace(r"\{domain\}", _DOMAIN) + "$")
    for t in HOST_COMMAND_TEMPLATES.values()
]


def host_commands(domain: str, addresses: Iterable[str]) -> dict[str, str]:
    out = {"dumpxml": HOST_COMMAND_TEMPLATES["dumpxml"].format(domain=domain)}
    for addr in addresses:
        out[f"driver {addr}"] = HOST_COMMAND_TEMPLATES["driver"].format(addr=addr)
        out[f"iommu-group {addr}"] = HOST_COMMAND_TEMPLATES["iommu-group"].format(addr=addr)
        out[f"iommu-group-id {addr}"] = HOST_COMMAND_TEMPLATES["iommu-group-id"].format(addr=addr)
        out[f"iommu-group-class {addr}"] = HOST_COMMAND_TEMPLATES["iommu-group-class"].format(addr=addr)
    return out


def is_read_only(command: str) -> bool:
    """True only for the exact commands above (host ones with a well-formed address or domain name)."""
    return (command in GUEST_COMMANDS.values() or any(p.match(command) for p in _HOST_PATTERNS)
            or any(p.match(command) for p in _PACKAGE_PATTERNS))


@dataclass(frozen=True)
class Expected:
    """What the stack config and outputs say this VM should look like."""
    vm: str
    gpu_count: int
    gpu_uuids: tuple[str, ...] = ()          # from the gpuInventory output (verify phase); empty: not known
    host_addresses: tuple[str, ...] = ()     # GPUs and NVSwitches on the host, 0000:1b:00.0
    nvswitch: bool = False
    driver_version: str | None = None
    toolkit_version: str | None = None
    runtime: str | None = "containerd"       # containerd / docker / None (no guest config)
    runtime_handler: str | None = None       # the RuntimeClass handler pods use ("nvidia"), None: default runtime
    resource: str = "nvidia.com/gpu"
    allocatable: int | None = None
    node_labels: dict[str, str] = field(default_factory=dict)
    node_taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)
    plugin: str | None = None                # helm / static / operator / None
    plugin_namespace: str = "nvidia-device-plugin"
    monitoring: bool = False
    monitoring_namespace: str = "monitoring"
    release: str = "kube-prometheus-stack"
    hole64_gib: int | None = None
    maxphysaddr: str | None = "passthrough"
    iommu_groups: dict[str, int] | None = None  # vms.<vm>.iommuGroups: the groups the preflight saw; None: not recorded
    assigned_elsewhere: dict[str, str] = field(default_factory=dict)  # host address -> the other VM on this host given it
    # drift (check_drift): what the stack deployed, against what the node has installed and loaded
    gpu_bus_ids: tuple[tuple[str, str], ...] = ()  # (UUID, guest PCI address 0000:0d:00.0) from gpuInventory; empty: not known
    kubernetes_version: str | None = None
    fabricmanager_package: str | None = None  # the Fabric Manager package (render/nvidia_packages.py probe); None: no NVSwitch
    os_family: str = "ubuntu"


@dataclass(frozen=True)
class CommandResult:
    command: str
    rc: int
    stdout: str
    stderr: str = ""


@dataclass
class Evidence:
    guest: dict[str, CommandResult] = field(default_factory=dict)   # GUEST_COMMANDS key -> result
    host: dict[str, CommandResult] = field(default_factory=dict)    # host_commands() key -> result
    k8s: dict[str, Any] = field(default_factory=dict)               # node, pods, daemonsets, events, runtimeclasses, servicemonitors, prometheusrules
    prometheus: dict[str, Any] = field(default_factory=dict)        # targets, rules, alerts (the API's JSON)
    plugin_logs: dict[str, str] = field(default_factory=dict)       # pod name -> log tail
    pod_logs: dict[str, str] = field(default_factory=dict)          # namespace/name of a GPU pod on the node -> log tail
    errors: dict[str, str] = field(default_factory=dict)            # what could not be collected, and why


@dataclass(frozen=True)
class Result:
    section: str
    check: str
    status: str
    evidence: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def exit_code(results: Iterable[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


# ----------------------------------------------------------------------------------------------------------
# helpers


def _out(ev: dict[str, CommandResult], key: str) -> CommandResult | None:
    return ev.get(key)


def _first(text: str, n: int = 1) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:n]) if lines else "(no output)"


def _missing(section: str, check: str, what: str, ev: Evidence) -> Result:
    why = ev.errors.get(what, "not collected")
    return Result(section, check, WARN, f"{what}: {why}", "collect it by hand (docs/OPERATIONS.md, manual fallback)")


def _requests(pod: dict, resource: str) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        limits = ((c.get("resources") or {}).get("limits") or {})
        total += int(limits.get(resource, 0) or 0)
    return total


def _events_for(ev: Evidence, kind: str, name: str, namespace: str | None = None) -> list[dict]:
    out = []
    for e in ev.k8s.get("events") or []:
        obj = e.get("involvedObject") or {}
        if obj.get("kind") == kind and obj.get("name") == name and (namespace is None or obj.get("namespace") == namespace):
            out.append(e)
    return sorted(out, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


# ----------------------------------------------------------------------------------------------------------
# 1. hypervisor


def _domain_facts(xml: str) -> dict[str, Any]:
    root = ElementTree.fromstring(xml)
    hole = None
    for arg in root.iter("{http://libvirt.org/schemas/domain/qemu/1.0}arg"):
        if m := re.match(r"q35-pcihost\.pci-hole64-size=(\d+)G", arg.get("value", "")):
            hole = int(m.group(1))
    mpa = root.find("./cpu/maxphysaddr")
    maxphys = None
    if mpa is not None:
        maxphys = mpa.get("mode") if mpa.get("mode") == "passthrough" else f"{mpa.get('mode')}:{mpa.get('bits')}"
    hostdevs = []
    for src in root.findall("./devices/hostdev/source/address"):
        hostdevs.append(f"{int(src.get('domain', '0'), 16):04x}:{int(src.get('bus'), 16):02x}:{int(src.get('slot'), 16):02x}.{int(src.get('function'), 16):x}")
    return {"hole64_gib": hole, "maxphysaddr": maxphys, "hostdevs": hostdevs, "state": root.get("id")}


def _group_id(ev: Evidence, addr: str) -> str | None:
    """The group number from `readlink /sys/bus/pci/devices/<addr>/iommu_group` (…/kernel/iommu_groups/34)."""
    r = ev.host.get(f"iommu-group-id {addr}")
    if r is None or r.rc != 0 or not r.stdout.strip():
        return None
    return r.stdout.strip().rsplit("/", 1)[-1]


def parse_group_classes(text: str) -> dict[str, int]:
    """`grep -H . …/iommu_group/devices/*/class` lines (…/devices/0000:41:00.0/class:0x030200) -> member -> class."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        path, sep, value = line.rpartition(":")
        parts = path.split("/")
        if not sep or len(parts) < 2 or parts[-1] != "class":
            continue
        try:
            out[parts[-2]] = int(value.strip(), 16)
        except ValueError:
            continue
    return out


def group_roles(x: Expected, ev: Evidence, addr: str) -> dict[str, str] | None:
    """Each member of addr's group and its role under render/iommu.group_member_role, the preflight's rule; None: unreadable.

    A member whose class could not be read counts as no bridge, as the preflight
    counts a member it has no node device for.
    """
    r = ev.host.get(f"iommu-group {addr}")
    if r is None or r.rc != 0:
        return None
    c = ev.host.get(f"iommu-group-class {addr}")
    classes = parse_group_classes(c.stdout) if c is not None and c.rc == 0 else {}
    return {m: group_member_role(m, addr, x.host_addresses, classes.get(m), x.assigned_elsewhere) for m in r.stdout.split()}


def _strangers(x: Expected, ev: Evidence, unreadable: bool = False) -> list[str]:
    """Members of this VM's devices' groups that block passthrough: not its devices, their other functions, or PCI bridges."""
    strangers = []
    for addr in x.host_addresses:
        roles = group_roles(x, ev, addr)
        if roles is None:
            if unreadable:
                strangers.append(f"{addr}: group unreadable")
            continue
        for member, role in roles.items():
            if role == MEMBER_BLOCKS:
                owner = f" (assigned to {x.assigned_elsewhere[member]})" if member in x.assigned_elsewhere else ""
                strangers.append(f"{addr} shares its group with {member}{owner}")
    return strangers


def _groups_as_planned(x: Expected, ev: Evidence) -> Result:
    """Each device is in the IOMMU group the preflight read (the stack's vms.<vm>.iommuGroups output).

    A group number changes when the host's firmware or kernel regroups the
    devices (an ACS setting, a BIOS update, pcie_acs_override, a card moved to
    another slot); the preflight's verdict on who shares a group is then stale.
    """
    s, name = "hypervisor", "IOMMU groups as at preflight"
    if x.iommu_groups is None:
        return Result(s, name, WARN, "the stack's outputs record no vms.<vm>.iommuGroups (a stack last updated before gpu-stack recorded them)",
                      "`pulumi up` records the groups the preflight reads; until then this check cannot compare")
    moved, unrecorded, unread = [], [], []
    for addr in x.host_addresses:
        want = x.iommu_groups.get(addr)
        now = _group_id(ev, addr)
        if now is None:
            unread.append(addr)
        elif want is None:
            unrecorded.append(addr)
        elif str(want) != now:
            moved.append(f"{addr} is in group {now}, the preflight saw {want}")
    preflight = "run `pulumi preview` to re-run the IOMMU preflight on today's groups (seed 002), then `pulumi up`"
    if moved and _strangers(x, ev):
        return Result(s, name, FAIL, "; ".join(moved) + "; and a group now holds devices this VM was not given (IOMMU groups above)",
                      "the host regrouped its devices since the last `pulumi up` (firmware or kernel update, ACS, a moved card): " + preflight)
    if moved:
        # numbers follow discovery order: a device added or removed before these, or another kernel, renumbers
        # every later group while the members stay the same, and hostdevs name addresses, not groups
        return Result(s, name, WARN, "; ".join(moved) + "; each group still holds only this VM's devices (IOMMU groups above)",
                      "renumbered, not regrouped: nothing to fix for this VM; " + preflight + " to record today's numbers")
    if unrecorded:
        return Result(s, name, WARN, f"{', '.join(unrecorded)} not in vms.<vm>.iommuGroups: configured since the last `pulumi up`",
                      "`pulumi up` applies the configuration and records its groups")
    if unread:
        return Result(s, name, WARN, f"group unreadable for {', '.join(unread)}", "run the doctor with hypervisor access (SSH to the libvirtUri's host)")
    return Result(s, name, PASS, ", ".join(f"{a}: {x.iommu_groups[a]}" for a in x.host_addresses))


def check_hypervisor(x: Expected, ev: Evidence) -> list[Result]:
    s = "hypervisor"
    if not ev.host:
        if "host" in ev.errors:
            return [Result(s, "hypervisor reachable", WARN, ev.errors["host"],
                           "check SSH to the libvirtUri's user@host (--host-ssh-key, and its host key against hosts[].hostKey: ssh-keyscan -t ed25519 HOST), or pass --no-host")]
        return [Result(s, "hypervisor checks", SKIP, ev.errors.get("host-skipped", "no hypervisor access for this VM"))]
    out: list[Result] = []
    bad = []
    for addr in x.host_addresses:
        r = ev.host.get(f"driver {addr}")
        driver = r.stdout.strip().rsplit("/", 1)[-1] if r and r.rc == 0 else None
        if driver != "vfio-pci":
            bad.append(f"{addr}: {driver or 'no driver'}")
    if bad:
        out.append(Result(s, "devices bound to vfio-pci", FAIL, "; ".join(bad),
                          "the VM must be running (libvirt binds vfio-pci on start); if the host's nvidia driver holds the device, "
                          "keep it off the host (blacklist nvidia/nouveau, or `driverctl set-override <addr> vfio-pci`)"))
    else:
        out.append(Result(s, "devices bound to vfio-pci", PASS, f"{len(x.host_addresses)} devices: vfio-pci"))
    strangers = _strangers(x, ev, unreadable=True)
    if strangers:
        out.append(Result(s, "IOMMU groups", WARN, "; ".join(sorted(set(strangers))),
                          "every other member of a group must be a PCI bridge or given to this VM (seed 002); "
                          "`lspci -nns <member>` tells which; `pulumi preview` re-runs the preflight"))
    else:
        groups, bridges = [], set()
        for addr in x.host_addresses:
            groups.append(f"{addr}: {_group_id(ev, addr) or '?'}")
            bridges |= {m for m, role in (group_roles(x, ev, addr) or {}).items() if role == MEMBER_BRIDGE}
        left = f", PCI bridges left on the host: {', '.join(sorted(bridges))}" if bridges else ""
        out.append(Result(s, "IOMMU groups", PASS, "each group holds only this VM's devices (and their other functions); groups "
                          + ", ".join(groups) + left))
    out.append(_groups_as_planned(x, ev))
    dump = ev.host.get("dumpxml")
    if dump is None or dump.rc != 0:
        out.append(Result(s, "domain hole64 and maxphysaddr", FAIL, f"virsh dumpxml {x.vm}: {_first(dump.stderr or dump.stdout) if dump else 'not run'}",
                          f"the domain is not defined on this host: `pulumi up` recreates it (docs/OPERATIONS.md, replacing a VM)"))
        return out
    facts = _domain_facts(dump.stdout)
    problems = []
    if x.hole64_gib and facts["hole64_gib"] != x.hole64_gib:
        problems.append(f"pci-hole64-size {facts['hole64_gib']}G, planned {x.hole64_gib}G")
    if x.maxphysaddr and facts["maxphysaddr"] != x.maxphysaddr:
        problems.append(f"maxphysaddr {facts['maxphysaddr']}, planned {x.maxphysaddr}")
    missing = sorted(set(x.host_addresses) - set(facts["hostdevs"]))
    if missing:
        problems.append(f"hostdevs missing: {', '.join(missing)}")
    if facts["state"] in (None, "-1"):
        problems.append("domain is not running")
    ev_line = f"hole64 {facts['hole64_gib']}G, maxphysaddr {facts['maxphysaddr']}, {len(facts['hostdevs'])} hostdevs"
    if problems:
        out.append(Result(s, "domain hole64 and maxphysaddr", FAIL, "; ".join(problems) + f" ({ev_line})",
                          "the running domain is not the planned one: compare with `make plan` vms/<vm>/domain.xml and run `pulumi up` "
                          "(a too-small hole gives `BAR ... no space` in the guest, seed 000)"))
    else:
        out.append(Result(s, "domain hole64 and maxphysaddr", PASS, ev_line))
    return out


# ----------------------------------------------------------------------------------------------------------
# 2. guest driver


def _gpu_index_by_pci(q_gpus) -> dict[str, int]:
    return {normalize_pci(g.bus_id).rsplit(".", 1)[0]: i for i, g in enumerate(q_gpus)}


def check_guest_driver(x: Expected, ev: Evidence) -> list[Result]:
    s = "guest driver"
    out: list[Result] = []
    listing = _out(ev.guest, "nvidia-smi-L")
    if listing is None:
        return [Result(s, "guest reachable", FAIL, f"guest: {ev.errors.get('guest', 'not collected')}",
                       "check the VM runs (`virsh list` on the host), its address (outputs vms.<vm>.ip), the SSH key and that the "
                       "host key still matches vms.<vm>.hostPublicKey; the guest checks need SSH")]
    lines = [line for line in listing.stdout.splitlines() if line.strip()]
    gpu_lines = [line for line in lines if _LIST_LINE.match(line)]
    other = [line.strip() for line in lines if line not in gpu_lines] + [line.strip() for line in listing.stderr.splitlines() if line.strip()]
    gpus = parse_list("\n".join(gpu_lines))
    seen = {g.uuid for g in gpus}
    missing = [u for u in x.gpu_uuids if u not in seen]
    evidence = f"{len(gpus)} of {x.gpu_count} GPUs listed"
    if missing:
        evidence += f"; missing by UUID: {', '.join(missing)}"
    if other:
        evidence += f"; nvidia-smi: {other[0]}" + (f" (+{len(other) - 1} more)" if len(other) > 1 else "")
    if len(gpus) < x.gpu_count or missing:
        fix = ("GPUs lost after an Xid (see below): drain, reboot the VM (`virsh reboot <vm>`), and if they stay lost remove them from vms[].gpus"
               if other else "check the hostdevs (hypervisor above) and `dmesg | grep -i nvrm` in the guest; `pulumi up` re-runs the driver phase")
        out.append(Result(s, "GPU count and UUIDs", FAIL, evidence, fix))
    elif len(gpus) > x.gpu_count:
        out.append(Result(s, "GPU count and UUIDs", WARN, evidence, "more GPUs than configured: update vms[].gpus"))
    else:
        out.append(Result(s, "GPU count and UUIDs", PASS, evidence + (" (matched by UUID)" if x.gpu_uuids else "")))

    q = _out(ev.guest, "nvidia-smi-q")
    head, q_gpus = query_gpus(q.stdout) if q is not None and q.rc == 0 else ({}, [])
    driver = head.get("driver_version")
    if driver is None:
        out.append(Result(s, "driver version", FAIL, f"nvidia-smi -q: {_first((q.stderr or q.stdout) if q else 'not run')}",
                          "the driver is not loaded: `pulumi up` re-runs the driver phase; reboot if it says the old module is busy"))
    elif x.driver_version and driver != x.driver_version:
        out.append(Result(s, "driver version", FAIL, f"loaded {driver}, pinned {x.driver_version}",
                          "drain, reboot the guest so the pinned module loads, `pulumi up` (docs/OPERATIONS.md, upgrading the driver)"))
    else:
        out.append(Result(s, "driver version", PASS, f"{driver} (CUDA {head.get('cuda_version')})"))

    mods = _out(ev.guest, "modules")
    if mods is None or mods.rc != 0:
        out.append(_missing(s, "nouveau not loaded", "modules", ev))
    elif any(line.split()[0] == "nouveau" for line in mods.stdout.splitlines() if line.split()):
        out.append(Result(s, "nouveau not loaded", FAIL, "nouveau is in /proc/modules",
                          "blacklist nouveau and rebuild the initramfs (the nouveau phase does both), then reboot"))
    else:
        out.append(Result(s, "nouveau not loaded", PASS, "nouveau absent from /proc/modules"))

    if q_gpus:
        off = [f"GPU {i} ({g.bus_id})" for i, g in enumerate(q_gpus) if g.persistence_mode != "Enabled"]
        out.append(Result(s, "persistence mode", WARN if off else PASS,
                          (f"off on {', '.join(off)}" if off else f"Enabled on {len(q_gpus)} GPUs"),
                          "`sudo systemctl enable --now nvidia-persistenced` (the driver phase does it)" if off else ""))

    if x.nvswitch:
        fm = _out(ev.guest, "fabricmanager")
        active = fm is not None and re.search(r"^\s*Active: active \(running\)", fm.stdout, re.M) is not None
        line = next((ln.strip() for ln in (fm.stdout if fm else "").splitlines() if ln.strip().startswith("Active:")), "no status")
        out.append(Result(s, "Fabric Manager active", PASS if active else FAIL, f"nvidia-fabricmanager: {line}",
                          "" if active else "`sudo systemctl enable --now nvidia-fabricmanager` in the guest; its version must equal the driver's "
                          "(nvidia-fabricmanager-<branch>), and all NVSwitches must be passed through; otherwise CUDA fails with error 802 "
                          "(system not yet initialized)"))
        not_done = [f"GPU {i}: {g.fabric_state or 'N/A'}/{g.fabric_status or 'N/A'}" for i, g in enumerate(q_gpus)
                    if not (g.fabric_state == "Completed" and g.fabric_status == "Success")]
        if not q_gpus:
            out.append(_missing(s, "fabric state", "nvidia-smi-q", ev))
        else:
            out.append(Result(s, "fabric state", FAIL if not_done else PASS,
                              "; ".join(not_done) if not_done else f"Completed/Success on {len(q_gpus)} GPUs",
                              "fabric not trained: start Fabric Manager and wait for State Completed; CUDA returns error 802 until then" if not_done else ""))
        out.append(_nvlink_result(x, ev))
    else:
        out.append(Result(s, "Fabric Manager and NVLink", SKIP, "no NVSwitch in this VM"))

    dmesg = _out(ev.guest, "dmesg")
    if dmesg is None or dmesg.rc != 0:
        out.append(_missing(s, "Xid errors", "dmesg", ev))
    else:
        out.extend(_xid_results(parse_xid_lines(dmesg.stdout), q_gpus))
    return out


def _nvlink_result(x: Expected, ev: Evidence) -> Result:
    s = "guest driver"
    topo_r = _out(ev.guest, "nvidia-smi-topo")
    nv_r = _out(ev.guest, "nvidia-smi-nvlink")
    problems = []
    evidence = []
    if topo_r is not None and topo_r.rc == 0:
        try:
            links = parse_topo_matrix(topo_r.stdout).gpu_links()
            not_nv = [f"{a}-{b} {v}" for (a, b), v in links.items() if not v.startswith("NV")]
            kinds = sorted(set(links.values()))
            evidence.append(f"topo: {', '.join(kinds) or 'no GPU pairs'}")
            if not_nv:
                problems.append(f"pairs without NVLink: {', '.join(not_nv[:4])}" + (" ..." if len(not_nv) > 4 else ""))
        except ValueError as e:
            problems.append(f"topo -m: {e}")
    if nv_r is not None and nv_r.rc == 0:
        gpus = parse_nvlink_status(nv_r.stdout)
        down = [f"GPU {g.index} links {g.inactive()}" for g in gpus if g.inactive()]
        unsupported = [f"GPU {g.index}" for g in gpus if not g.supported]
        evidence.append(f"nvlink: {sum(len(g.links) for g in gpus)} links on {len(gpus)} GPUs")
        if down:
            problems.append("inactive: " + "; ".join(down))
        if unsupported:
            problems.append("no NVLink on " + ", ".join(unsupported))
    if not evidence and not problems:
        return _missing(s, "NVLink", "nvidia-smi-topo", ev)
    return Result(s, "NVLink", FAIL if problems else PASS, "; ".join(problems + evidence),
                  "check Fabric Manager and that all NVSwitches are passed through; reset the GPU (reboot the VM)" if problems else "")


def _xid_results(events: list[XidEvent], q_gpus) -> list[Result]:
    s = "guest driver"
    if not events:
        return [Result(s, "Xid errors", PASS, "no NVRM: Xid lines in dmesg")]
    by_pci = _gpu_index_by_pci(q_gpus) if q_gpus else {}
    out = []
    for code in sorted({e.code for e in events}):
        these = [e for e in events if e.code == code]
        pcis = sorted({e.pci for e in these})
        where = ", ".join(p + (f" (GPU {by_pci[p[4:]]})" if p[4:] in by_pci else "") for p in pcis)
        cat = these[0].category
        status = WARN if cat == "application" or code in (63, 92, 94) else FAIL
        out.append(Result(s, f"Xid {code}", status,
                          f"{len(these)} events on {len(pcis)} GPUs ({where}): {these[-1].line}",
                          these[0].meaning))
    return out


# ----------------------------------------------------------------------------------------------------------
# 3. runtime


def _containerd_runtimes(text: str) -> dict[str, dict]:
    found: dict[str, dict] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "runtimes" and isinstance(v, dict):
                    for name, rt in v.items():
                        if isinstance(rt, dict):
                            found[name] = rt
                else:
                    walk(v)

    walk(tomllib.loads(text))
    return found


def _cluster_answered(ev: Evidence) -> bool:
    return "pods" in ev.k8s


def _runtime_class(x: Expected, ev: Evidence) -> list[Result]:
    classes = {rc["metadata"]["name"]: rc.get("handler") for rc in ev.k8s.get("runtimeclasses") or []}
    ok = classes.get(x.runtime_handler) == x.runtime_handler
    return [Result("runtime", "RuntimeClass handler", PASS if ok else FAIL,
                   f"RuntimeClass {x.runtime_handler}: handler {classes.get(x.runtime_handler, 'absent')}",
                   "" if ok else "`pulumi up` creates RuntimeClass nvidia (handler nvidia); pods using it fail with `no runtime for \"nvidia\"` without it")]


def check_runtime(x: Expected, ev: Evidence) -> list[Result]:
    s = "runtime"
    out: list[Result] = []
    if x.gpu_count == 0:
        # a VM without GPUs gets no toolkit and no nvidia runtime (the container-runtime phase, issue 26 item 2)
        return [Result(s, "runtime checks", SKIP, "a VM without GPUs: no NVIDIA Container Toolkit or nvidia runtime is installed there")]
    if not ev.guest:
        out.append(Result(s, "runtime checks", SKIP, "guest not reachable (see guest driver)"))
        if x.runtime_handler and _cluster_answered(ev):
            out.extend(_runtime_class(x, ev))
        return out
    handler = x.runtime_handler or "nvidia"
    has_handler = None
    if x.runtime == "containerd":
        r = _out(ev.guest, "containerd-config")
        if r is None or r.rc != 0:
            out.append(_missing(s, "containerd nvidia runtime", "containerd-config", ev))
        else:
            try:
                runtimes = _containerd_runtimes(r.stdout)
            except tomllib.TOMLDecodeError as e:
                runtimes = {}
                out.append(Result(s, "containerd config", FAIL, f"containerd config dump is not TOML: {e}", "fix /etc/containerd/config.toml"))
            rt = runtimes.get(handler)
            binary = ((rt or {}).get("options") or {}).get("BinaryName", "")
            has_handler = rt is not None and "nvidia-container-runtime" in binary
            out.append(Result(s, "containerd nvidia runtime", PASS if has_handler else FAIL,
                              f"runtimes: {', '.join(sorted(runtimes)) or 'none'}" + (f"; {handler}: {binary}" if rt else ""),
                              "" if has_handler else
                              "`sudo nvidia-ctk runtime configure --runtime=containerd` and `sudo systemctl restart containerd` (drain first), "
                              "or `pulumi up` re-runs the container-runtime phase (seed 003 §3.1)"))
    elif x.runtime == "docker":
        r = _out(ev.guest, "docker-daemon")
        try:
            runtimes = (json.loads(r.stdout) or {}).get("runtimes", {}) if r is not None and r.rc == 0 else {}
        except json.JSONDecodeError:
            runtimes = {}
        has_handler = "nvidia" in runtimes
        out.append(Result(s, "docker nvidia runtime", PASS if has_handler else FAIL, f"daemon.json runtimes: {', '.join(sorted(runtimes)) or 'none'}",
                          "" if has_handler else "`sudo nvidia-ctk runtime configure --runtime=docker --set-as-default` and restart docker"))
    if x.runtime_handler and _cluster_answered(ev):
        out.extend(_runtime_class(x, ev))
    r = _out(ev.guest, "nvidia-ctk")
    version = None
    if r is not None and r.rc == 0 and (m := re.search(r"version (\d+\.\d+\.\d+)", r.stdout)):
        version = m.group(1)
    if version is None:
        out.append(Result(s, "toolkit version", FAIL, f"nvidia-ctk --version: {_first(r.stderr or r.stdout) if r else 'not run'}",
                          "the NVIDIA Container Toolkit is missing: `pulumi up` re-runs the container-runtime phase"))
    elif x.toolkit_version and version != x.toolkit_version:
        out.append(Result(s, "toolkit version", WARN, f"nvidia-ctk {version}, pinned {x.toolkit_version}",
                          "`pulumi up` installs the pinned toolkit (guest.containerRuntime.nvidiaToolkitVersion)"))
    else:
        out.append(Result(s, "toolkit version", PASS, f"nvidia-ctk {version}"))
    r = _out(ev.guest, "cdi")
    devices = [line.strip() for line in (r.stdout if r and r.rc == 0 else "").splitlines() if line.strip().startswith("nvidia.com/gpu=")]
    if not devices:
        out.append(Result(s, "CDI spec", SKIP, "no CDI devices (CDI not used)"))
    else:
        named = {d.split("=", 1)[1] for d in devices}
        lacking = [str(i) for i in range(x.gpu_count) if str(i) not in named]
        out.append(Result(s, "CDI spec", WARN if lacking else PASS, f"{len(devices)} CDI devices" + (f"; GPUs not in it: {', '.join(lacking)}" if lacking else ""),
                          "regenerate: `sudo nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml`" if lacking else ""))
    return out


# ----------------------------------------------------------------------------------------------------------
# 4. kubernetes


def _plugin_daemonsets(x: Expected, ev: Evidence) -> list[dict]:
    return [d for d in ev.k8s.get("daemonsets") or []
            if d["metadata"].get("namespace") == x.plugin_namespace and "device-plugin" in d["metadata"]["name"]]


def _plugin_pods(x: Expected, ev: Evidence) -> list[dict]:
    return [p for p in ev.k8s.get("pods") or []
            if p["metadata"].get("namespace") == x.plugin_namespace and "device-plugin" in p["metadata"]["name"]
            and (p.get("spec") or {}).get("nodeName") == x.vm]


def _ready(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and all(
        c.get("ready") for c in (pod.get("status") or {}).get("containerStatuses") or [{"ready": False}])


def check_kubernetes(x: Expected, ev: Evidence, runtime_ok: bool | None = None) -> list[Result]:
    s = "kubernetes"
    node = ev.k8s.get("node")
    if not _cluster_answered(ev):
        return [Result(s, "cluster reachable", WARN, f"Kubernetes API: {ev.errors.get('node') or ev.errors.get('pods', 'not collected')}",
                       "check the kubeconfig output (or --kubeconfig) and that the API server answers; the manual fallback is in docs/OPERATIONS.md")]
    if node is None:
        return [Result(s, "node", FAIL, f"node {x.vm}: {ev.errors.get('node', 'not found')}",
                       "the node never joined: check the kubernetes phase (`journalctl -u kubelet` in the guest)")]
    out: list[Result] = []
    conds = {c["type"]: c for c in (node.get("status") or {}).get("conditions") or []}
    ready = conds.get("Ready", {}).get("status") == "True"
    labels = node["metadata"].get("labels") or {}
    taints = [(t["key"], t.get("value", ""), t["effect"]) for t in (node.get("spec") or {}).get("taints") or []]
    problems = []
    if not ready:
        problems.append(f"Ready={conds.get('Ready', {}).get('status', 'Unknown')}: {conds.get('Ready', {}).get('message', '')}")
    wrong = {k: labels.get(k) for k, v in x.node_labels.items() if labels.get(k) != v}
    if wrong:
        problems.append(f"labels differ: {wrong}")
    absent = [t for t in x.node_taints if t not in taints]
    extra = [t for t in taints if t not in x.node_taints and not t[0].startswith("node.kubernetes.io/")]
    if absent:
        problems.append(f"taints missing: {absent}")
    if extra:
        problems.append(f"unexpected taints: {extra}")
    if (node.get("spec") or {}).get("unschedulable"):
        problems.append("cordoned")
    ev_line = f"Ready={'True' if ready else 'False'}, taints {['%s=%s:%s' % t for t in taints] or 'none'}"
    out.append(Result(s, "node Ready, labels, taints", FAIL if not ready else (WARN if problems else PASS),
                      "; ".join(problems) or ev_line,
                      "" if not problems else "labels and taints come from kubernetes.nodeLabels/nodeTaints: `pulumi up` re-applies them; "
                      "`kubectl uncordon` when a cordon is done"))

    plugin_ok = True
    if x.plugin:
        pods = _plugin_pods(x, ev)
        dss = _plugin_daemonsets(x, ev)
        running = [p for p in pods if _ready(p)]
        if running:
            out.append(Result(s, "device plugin on the node", PASS, f"{running[0]['metadata']['name']} Running in {x.plugin_namespace}"))
        else:
            plugin_ok = False
            node_taints = (node.get("spec") or {}).get("taints") or []
            reason = []
            for ds in dss:
                tmpl = ds["spec"]["template"]["spec"]
                untolerated = [t for t in node_taints if t["effect"] in ("NoSchedule", "NoExecute") and not any(tolerates(tol, t) for tol in tmpl.get("tolerations") or [])]
                if untolerated:
                    reason.append(f"DaemonSet {ds['metadata']['name']} does not tolerate taint "
                                  + ", ".join(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in untolerated))
                if not selector_matches({"matchLabels": tmpl.get("nodeSelector") or {}}, labels):
                    reason.append(f"DaemonSet {ds['metadata']['name']} nodeSelector {tmpl.get('nodeSelector')} does not match the node's labels")
            for p in pods:
                waiting = [c.get("state", {}).get("waiting", {}) for c in (p.get("status") or {}).get("containerStatuses") or []]
                evs = _events_for(ev, "Pod", p["metadata"]["name"], x.plugin_namespace)
                last = next((e for e in reversed(evs) if e.get("type") == "Warning"), None)
                reason.append(f"pod {p['metadata']['name']} {p['status'].get('phase')}"
                              + (f" ({waiting[0].get('reason')})" if waiting and waiting[0].get("reason") else "")
                              + (f": {last['reason']}: {last['message']}" if last else ""))
            if not dss:
                reason.append(f"no device-plugin DaemonSet in namespace {x.plugin_namespace}")
            toleration_fix = any("does not tolerate" in r for r in reason)
            runtime_fix = any("no runtime for" in r for r in reason)
            fix = ("add the toleration to the plugin DaemonSet (`tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]`, "
                   "seed 003's DaemonSet) or remove the taint; `pulumi up` renders it with the toleration" if toleration_fix else
                   "containerd has no `nvidia` runtime: see the runtime section; then `kubectl delete pod` the plugin pod" if runtime_fix else
                   f"`kubectl -n {x.plugin_namespace} describe ds`; `pulumi up` re-installs the plugin")
            out.append(Result(s, "device plugin on the node", FAIL, "; ".join(reason) or "no plugin pod on the node", fix))
        logs = "\n".join(v for k, v in ev.plugin_logs.items())
        bad = [line.strip() for line in logs.splitlines()
               if re.search(r"ListAndWatch|Allocate", line) and re.search(r"(?i)error|fail", line)]
        registered = re.search(r"Registered device plugin for '([^']+)' with Kubelet", logs)
        if bad:
            out.append(Result(s, "plugin log", FAIL, bad[-1], "restart the plugin pods (`kubectl -n <ns> delete pod -l ...`); check the GPU's health (Xid above)"))
        elif registered:
            out.append(Result(s, "plugin log", PASS, registered.group(0)))
        elif ev.plugin_logs:
            out.append(Result(s, "plugin log", WARN, _first(logs, 1), "no `Registered device plugin` line: the plugin did not register with the kubelet"))
        else:
            out.append(Result(s, "plugin log", SKIP if not plugin_ok else WARN, "no plugin log to read"))

    cap = int((node.get("status") or {}).get("capacity", {}).get(x.resource, 0) or 0)
    alloc = int((node.get("status") or {}).get("allocatable", {}).get(x.resource, 0) or 0)
    want = x.allocatable
    ev_line = f"{x.resource}: capacity {cap}, allocatable {alloc}, expected {want}"
    if want is None:
        out.append(Result(s, "capacity and allocatable", SKIP, ev_line + " (no expectedAllocatable output)"))
    elif alloc == want and cap == want:
        out.append(Result(s, "capacity and allocatable", PASS, ev_line))
    else:
        if runtime_ok is False:
            fix = "allocatable is 0 because the plugin cannot run: containerd has no `nvidia` runtime (runtime section above)"
        elif not plugin_ok:
            fix = "no capacity: the device plugin is not running on the node (above)"
        elif alloc < want:
            fix = "fewer devices than configured: GPUs lost (guest driver above) or time-slicing not applied; restart the plugin pod"
        else:
            fix = "more devices than configured: check time-slicing replicas (addons.devicePlugin.timeSlicing)"
        out.append(Result(s, "capacity and allocatable", FAIL, ev_line, fix))

    r = _out(ev.guest, "kubelet-checkpoint")
    if r is None or r.rc != 0:
        out.append(_missing(s, "kubelet checkpoint", "kubelet-checkpoint", ev))
    else:
        try:
            data = json.loads(r.stdout).get("Data") or {}
            devices = (data.get("RegisteredDevices") or {}).get(x.resource) or []
        except json.JSONDecodeError:
            devices = []
        n = len(devices)
        good = want is None or n == want
        out.append(Result(s, "kubelet checkpoint", PASS if good else FAIL, f"{n} {x.resource} devices registered",
                          "" if good else "the kubelet has not (re)registered the plugin's devices: restart the plugin pod"))
    return out


# ----------------------------------------------------------------------------------------------------------
# 5. workloads (seed 003 §2.1)


def classify_pod(pod: dict, events: list[dict], node: dict | None, resource: str) -> tuple[str, str, str]:
    """(class, evidence, fix) by the decision tree: insufficient GPU, affinity or taint, allocation error, mount error."""
    warnings = [e for e in events if e.get("type") == "Warning"] or events
    text = " | ".join(f"{e.get('reason')}: {e.get('message', '')}" for e in warnings[-3:])
    phase = (pod.get("status") or {}).get("phase")
    if re.search(rf"Insufficient {re.escape(resource)}", text):
        cap = int(((node or {}).get("status") or {}).get("allocatable", {}).get(resource, 0) or 0)
        if cap == 0:
            return ("insufficient GPU: node has no capacity", text,
                    "no GPU capacity on the node: the device plugin is the problem (kubernetes section); seed 003 §3.1")
        return ("insufficient GPU: all allocated", text,
                f"the node's {cap} GPUs are allocated: wait, lower the request, or add capacity (time-slicing, MIG, more nodes); "
                "check quotas with `kubectl describe quota -n <ns>`; seed 003 §3.2")
    if re.search(r"untolerated taint|node affinity|node selector|didn't match|had taint", text):
        return ("affinity or taint", text,
                "the pod lacks the `nvidia.com/gpu` toleration or its nodeSelector/affinity matches no GPU node (seed 001)")
    if re.search(r"(?i)allocate|UnexpectedAdmissionError|device plugin", text):
        return ("allocation error", text, "the device plugin's Allocate failed: read the plugin log, restart the plugin pod; seed 003 §3.3")
    if re.search(r"(?i)FailedMount|mount|nvidia-container-cli|no runtime for|OCI runtime", text):
        return ("mount or runtime error", text,
                "driver/device mounts failed: check the runtime section and `runtimeClassName: nvidia`; seed 003 §3.4")
    if re.search(r"(?i)CUDA driver version is insufficient", text):
        return ("CUDA version", text, "the image's CUDA is newer than the driver supports: older image or newer driver; seed 003 §3.5")
    if phase == "Pending":
        return ("pending, other reason", text or "no events", "`kubectl describe pod`: check other resources or affinity")
    return ("running but failing", text or "no events", "`kubectl exec <pod> -- nvidia-smi`: fails -> driver/mounts; works -> CUDA version (seed 003 §2.1)")


# What a container without its GPUs prints, by the branch of seed 003's tree it
# points to ("Running but no GPU -> nvidia-smi in the container -> driver/mounts,
# or the CUDA version"). The texts are the CUDA runtime's error strings
# (cudaGetErrorString of cudaErrorInsufficientDriver 35, cudaErrorNoDevice 100,
# cudaErrorSystemNotReady 802, cudaErrorCompatNotSupportedOnDevice 804), NVML's,
# nvidia-smi's and PyTorch's, as users quote them in NVIDIA's trackers.
NO_GPU_SIGNATURES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("CUDA version", re.compile(r"CUDA driver version is insufficient for CUDA runtime version|"
                                r"forward compatibility was attempted on non supported HW|\bcudaErrorInsufficientDriver\b"),
     "the image's CUDA is newer than the node's driver supports: an image built for an older CUDA, or a newer "
     "guest.nvidia.driverVersion (docs/OPERATIONS.md, Upgrading); seed 003 §3.5"),
    ("fabric not ready", re.compile(r"CUDA error: system not yet initialized|\bcudaErrorSystemNotReady\b|"
                                    r"\bcuda\w*\b.*\b(error|returned) 802\b", re.IGNORECASE),
     "CUDA error 802 on an NVSwitch system: Fabric Manager is down or the fabric is not Completed (guest driver section)"),
    ("NVML lost the devices", re.compile(r"Failed to initialize NVML: Unknown Error"),
     "the container lost its device cgroup entries, typically after `systemctl daemon-reload` on a systemd-cgroup runc "
     "(NVIDIA/nvidia-container-toolkit#48): restart the pod; lasting fix: CDI device injection"),
    ("driver or mounts", re.compile(r"no CUDA-capable device is detected|\bcudaErrorNoDevice\b|"
                                    r"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver|"
                                    r"libnvidia-ml\.so\.1: cannot open shared object file|Found no NVIDIA driver on your system"),
     "the container got no GPU devices or driver libraries: the runtime did not inject them (runtime section; "
     "`runtimeClassName: nvidia` on the containerd path); seed 003 §3.4"),
)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]")


def no_gpu_signature(log: str) -> tuple[str, str, str] | None:
    """(class, the matching log line, fix) for the first known no-GPU message in a container's log."""
    for cls, pattern, fix in NO_GPU_SIGNATURES:
        for line in log.splitlines():
            if pattern.search(line):
                # a tenant's text on the operator's terminal: no escape sequences, one short line
                return cls, _UNPRINTABLE.sub("?", line.strip())[:240], fix
    return None


def _handler_of(runtime_class: str | None, ev: Evidence) -> str | None:
    """The handler of the RuntimeClass a pod names (a site may name its class otherwise than its handler)."""
    if runtime_class is None:
        return None
    for rc in ev.k8s.get("runtimeclasses") or []:
        if (rc.get("metadata") or {}).get("name") == runtime_class:
            return rc.get("handler")
    return runtime_class


def _running_without_gpu(pod: dict, log: str | None, x: Expected, ev: Evidence) -> tuple[str, str, str] | None:
    """A Running pod that holds GPUs but cannot use them, from its spec and its own log."""
    spec = pod.get("spec") or {}
    if x.runtime_handler and _handler_of(spec.get("runtimeClassName"), ev) != x.runtime_handler:
        return ("running without the nvidia runtime",
                f"runtimeClassName {spec.get('runtimeClassName') or 'unset'}: containerd's default runtime ignores the "
                f"allocated GPUs (NVIDIA_VISIBLE_DEVICES), so the container sees none",
                f"add `runtimeClassName: {x.runtime_handler}` to the pod spec, or set guest.containerRuntime.nvidiaDefault: true (docs/OPERATIONS.md)")
    return no_gpu_signature(log) if log else None


def check_workloads(x: Expected, ev: Evidence) -> list[Result]:
    s = "workloads"
    out: list[Result] = []
    if not _cluster_answered(ev):
        return [Result(s, "GPU pods", SKIP, "cluster not reachable (see kubernetes)")]
    node = ev.k8s.get("node")
    for pod in ev.k8s.get("pods") or []:
        if _requests(pod, x.resource) == 0:
            continue
        nodename = (pod.get("spec") or {}).get("nodeName")
        if nodename not in (None, x.vm):
            continue
        st = pod.get("status") or {}
        waiting = [c["state"]["waiting"] for c in st.get("containerStatuses") or [] if "waiting" in (c.get("state") or {})]
        name = f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"
        log = ev.pod_logs.get(name)
        if st.get("phase") not in ("Pending", "Failed") and not waiting:
            found = _running_without_gpu(pod, log, x, ev) if st.get("phase") == "Running" else None
            if found:
                cls, text, fix = found
                # the spec is today's fact; a log line may be history the pod has recovered from
                from_spec = cls == "running without the nvidia runtime"
                out.append(Result(s, f"pod {name}", FAIL if from_spec else WARN, f"Running but no GPU: {cls}: {text}",
                                  fix if from_spec else fix + " (the line is from the last 50 log lines: if the pod has recovered since, ignore it)"))
            continue
        evs = _events_for(ev, "Pod", pod["metadata"]["name"], pod["metadata"].get("namespace"))
        cls, text, fix = classify_pod(pod, evs, node, x.resource)
        if cls == "running but failing" and log and (found := no_gpu_signature(log)):
            cls, line, fix = found
            text = f"{text} | log: {line}"
        out.append(Result(s, f"pod {name}", FAIL, f"{st.get('phase')}: {cls}: {text}", fix))
    if not out:
        out.append(Result(s, "GPU pods", PASS, f"no Pending, failing or GPU-less pod requests {x.resource}"))
    return out


# ----------------------------------------------------------------------------------------------------------
# 6. monitoring

EXPORTER_JOB = re.compile(r"nvidia-dcgm-exporter|dcgm-exporter")


def check_monitoring(x: Expected, ev: Evidence) -> list[Result]:
    s = "monitoring"
    if not x.monitoring:
        return [Result(s, "monitoring", SKIP, "addons.monitoring is off")]
    if not _cluster_answered(ev):
        return [Result(s, "monitoring", SKIP, "cluster not reachable (see kubernetes)")]
    out: list[Result] = []
    monitors = [m for m in ev.k8s.get("servicemonitors") or [] if "dcgm" in m["metadata"]["name"]]
    if not monitors:
        out.append(Result(s, "ServiceMonitor selected", FAIL, "no dcgm ServiceMonitor", "`pulumi up` creates it (DcgmServiceMonitor / GPU Operator dcgmExporter.serviceMonitor)"))
    else:
        bad = [f"{m['metadata']['namespace']}/{m['metadata']['name']} release={(m['metadata'].get('labels') or {}).get('release')}"
               for m in monitors if (m["metadata"].get("labels") or {}).get("release") != x.release]
        out.append(Result(s, "ServiceMonitor selected", FAIL if bad else PASS,
                          ("; ".join(bad) + f" (Prometheus selects release={x.release})") if bad else f"{len(monitors)} dcgm ServiceMonitor(s) with release={x.release}",
                          f"label it `release: {x.release}` (seed 000): `kubectl label servicemonitor -n <ns> <name> release={x.release}`, "
                          "or let `pulumi up` render it" if bad else ""))
    targets = ((ev.prometheus.get("targets") or {}).get("data") or {}).get("activeTargets")
    if targets is None:
        out.append(_missing(s, "dcgm-exporter target up", "prometheus", ev))
    else:
        ours = [t for t in targets if EXPORTER_JOB.search((t.get("labels") or {}).get("job", ""))]
        on_node = [t for t in ours if (t.get("labels") or {}).get("node") in (None, x.vm)] or ours
        up = [t for t in on_node if t.get("health") == "up"]
        if not ours:
            out.append(Result(s, "dcgm-exporter target up", FAIL, f"{len(targets)} active targets, none of job dcgm-exporter",
                              "Prometheus does not scrape the exporter: the ServiceMonitor's release label (above) or the exporter pods"))
        elif not up:
            t = on_node[0]
            out.append(Result(s, "dcgm-exporter target up", FAIL, f"{t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError', '')}".strip(),
                              "the exporter pod on this node is not answering: `kubectl logs` it"))
        else:
            out.append(Result(s, "dcgm-exporter target up", PASS, f"{len(up)} target(s) up: {up[0].get('scrapeUrl')}"))
    groups = ((ev.prometheus.get("rules") or {}).get("data") or {}).get("groups")
    if groups is None:
        out.append(_missing(s, "GPU alert rules loaded", "prometheus", ev))
    else:
        names = {g.get("name") for g in groups}
        ok = "gpu-stack.gpu-health" in names
        out.append(Result(s, "GPU alert rules loaded", PASS if ok else FAIL,
                          f"{len(groups)} rule groups" + ("" if ok else "; gpu-stack.gpu-health absent"),
                          "" if ok else f"the PrometheusRule gpu-stack-gpu-alerts needs `release: {x.release}` (`kubectl get prometheusrule -A -L release`)"))
    alerts = ((ev.prometheus.get("alerts") or {}).get("data") or {}).get("alerts")
    if alerts is not None:
        firing = [a for a in alerts if a.get("state") == "firing" and a.get("labels", {}).get("alertname") not in ("Watchdog", "InfoInhibitor")]
        crit = [a for a in firing if a.get("labels", {}).get("severity") == "critical"]
        names = sorted({a["labels"]["alertname"] + (f"(node={a['labels']['node']})" if a["labels"].get("node") else "") for a in firing})
        out.append(Result(s, "firing alerts", FAIL if crit else (WARN if firing else PASS),
                          ", ".join(names) if names else "none firing",
                          "each alert's description says what to do; see docs/OPERATIONS.md" if firing else ""))
    return out


def diagnose(x: Expected, ev: Evidence) -> list[Result]:
    results: list[Result] = []
    results += check_hypervisor(x, ev)
    results += check_guest_driver(x, ev)
    runtime = check_runtime(x, ev)
    results += runtime
    runtime_ok = None
    for r in runtime:
        if r.check.endswith("nvidia runtime"):
            runtime_ok = r.status == PASS
    results += check_kubernetes(x, ev, runtime_ok)
    results += check_workloads(x, ev)
    results += check_monitoring(x, ev)
    results += check_drift(x, ev)
    return results


# ----------------------------------------------------------------------------------------------------------
# 7. drift: the node against what the stack deployed (docs/OPERATIONS.md, Drift)

DRIFT_PACKAGES = ("nvidia-container-toolkit", "containerd", "containerd.io", "kubeadm", "kubelet")
"""Packages whose installed version the doctor reads; containerd comes as `containerd` (Ubuntu's archive) or
`containerd.io` (Docker's repository), whichever scripts/guest/container-runtime.sh installed."""

NODE_ANNOTATIONS = {
    "driver": "gpu-stack.io/expected-driver",
    "fabricmanager": "gpu-stack.io/expected-fabricmanager",
    "toolkit": "gpu-stack.io/expected-toolkit",
    "kubernetes": "gpu-stack.io/expected-kubernetes",
    "gpu-uuids": "gpu-stack.io/gpu-uuids",
}
"""What the guest phases record on each Node (scripts/guest/lib.sh record_expected): upgrade-check writes the
planned versions, the bootstrap's verify the GPUs it found (UUID@guest PCI address) and, where none is recorded
yet, the versions it has just installed and verified."""


def drift_packages(x: Expected) -> tuple[str, ...]:
    return DRIFT_PACKAGES + ((x.fabricmanager_package,) if x.fabricmanager_package else ())


def parse_packages(text: str) -> dict[str, str]:
    """`NAME VERSION` lines (package_command) -> {name: upstream version}: the packaging revision (`-1`, `-1.1`) dropped."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.match(r"^\d", parts[1]):
            version = parts[1].split(":", 1)[-1]  # a Debian epoch (1:1.7.27-0ubuntu1)
            out[parts[0]] = version.split("-", 1)[0] if re.match(r"^\d+(\.\d+)+-", version) else version
    return out


def loaded_driver(text: str) -> str | None:
    """`/proc/driver/nvidia/version`: `NVRM version: NVIDIA UNIX [Open Kernel Module for ]x86_64 Kernel Module  590.48.01  ...`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = re.search(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s", first + " ")
    return m.group(1) if m else None


def same_version(have: str | None, want: str) -> bool:
    """1.17.8 is 1.17.8, 1.17.8-1 and v1.17.8 (kubelet); not 1.17.80."""
    return have is not None and (have.lstrip("v") == want or have.lstrip("v").startswith(want + "-"))


_OUTSIDE = ("the node was changed outside gpu-stack (unattended-upgrades, a hand fix): drain it and put the planned version back "
            "(docs/OPERATIONS.md, Drift), or let gpu-stack do it: the next `pulumi up` that runs the upgrade path "
            "(a version change or a gpu-stack release) finds the difference in upgrade-check and rolls the node back in its wave, "
            "with drain and reboot")


def _version_results(x: Expected, ev: Evidence, pkgs: dict[str, str] | None) -> list[Result]:
    s = "drift"
    out: list[Result] = []
    node_info = ((ev.k8s.get("node") or {}).get("status") or {}).get("nodeInfo") or {}
    if x.gpu_count and x.driver_version:
        r_loaded, r_installed = ev.guest.get("driver-loaded"), ev.guest.get("driver-installed")
        if r_loaded is None:
            return [_missing(s, "driver", "driver-loaded", ev)]
        loaded = loaded_driver(r_loaded.stdout) if r_loaded is not None and r_loaded.rc == 0 else None
        installed = r_installed.stdout.strip() if r_installed is not None and r_installed.rc == 0 and r_installed.stdout.strip() else None
        line = f"driver loaded {loaded or 'none'}, installed {installed or 'none'}, plan {x.driver_version}"
        if loaded == x.driver_version and installed in (None, x.driver_version):
            out.append(Result(s, "driver", PASS, line))
        elif installed == x.driver_version:
            out.append(Result(s, "driver", FAIL, line, "the planned module is installed but another one is loaded: drain the node and reboot it "
                              "to load it (kubectl drain <vm> --ignore-daemonsets --delete-emptydir-data; sudo reboot; kubectl uncordon <vm>)"))
        else:
            out.append(Result(s, "driver", FAIL, line, _OUTSIDE))
    if x.fabricmanager_package and x.driver_version and pkgs is not None:
        fm = pkgs.get(x.fabricmanager_package)
        line = f"{x.fabricmanager_package} {fm or 'not installed'}, plan {x.driver_version}"
        out.append(Result(s, "Fabric Manager", PASS if same_version(fm, x.driver_version) else FAIL, line,
                          "" if same_version(fm, x.driver_version) else
                          "Fabric Manager must be at the driver's exact version (CUDA error 802 otherwise): " + _OUTSIDE))
    if x.toolkit_version and pkgs is not None:
        tk = pkgs.get("nvidia-container-toolkit")
        ok = same_version(tk, x.toolkit_version)
        out.append(Result(s, "nvidia-container-toolkit", PASS if ok else FAIL,
                          f"nvidia-container-toolkit {tk or 'not installed'}, plan {x.toolkit_version}", "" if ok else _OUTSIDE))
    running_rt = node_info.get("containerRuntimeVersion")  # containerd://1.7.27
    if x.runtime == "containerd" and pkgs is not None:
        installed_rt = pkgs.get("containerd.io") or pkgs.get("containerd")
        running = running_rt.split("://", 1)[-1] if running_rt else None
        if installed_rt is None or running is None:
            out.append(Result(s, "containerd", WARN if installed_rt is None else SKIP,
                              f"containerd installed {installed_rt or 'not found'}, running {running or 'unknown (no node from the API)'}",
                              "" if installed_rt else "check `containerd --version` on the node"))
        else:
            ok = same_version(installed_rt, running) or same_version(running, installed_rt)
            out.append(Result(s, "containerd", PASS if ok else FAIL, f"containerd installed {installed_rt}, running {running}",
                              "" if ok else "containerd was upgraded but the running daemon is the old one: drain the node, "
                              "`sudo systemctl restart containerd`, uncordon (the config does not pin containerd; hold it: "
                              "`apt-mark hold containerd.io` / `dnf versionlock add containerd.io`)"))
    if x.kubernetes_version and pkgs is not None:
        kubelet_running = node_info.get("kubeletVersion")
        have = {"kubeadm": pkgs.get("kubeadm"), "kubelet": pkgs.get("kubelet")}
        wrong = [f"{n} {v or 'not installed'}" for n, v in have.items() if not same_version(v, x.kubernetes_version)]
        line = (f"kubeadm {have['kubeadm'] or 'none'}, kubelet {have['kubelet'] or 'none'} installed, "
                f"{kubelet_running or 'unknown'} running, plan {x.kubernetes_version}")
        if wrong:
            out.append(Result(s, "kubeadm and kubelet", FAIL, line, _OUTSIDE))
        elif kubelet_running and not same_version(kubelet_running, x.kubernetes_version):
            out.append(Result(s, "kubeadm and kubelet", FAIL, line, "the planned kubelet is installed but the old one runs: "
                              "`sudo systemctl restart kubelet` on the node"))
        else:
            out.append(Result(s, "kubeadm and kubelet", PASS, line))
    return out


def _gpu_identity(x: Expected, ev: Evidence) -> Result | None:
    """Each GPU the stack deployed (gpuInventory: UUID at a guest PCI address) against `nvidia-smi -q` now.

    A UUID is the board's own (it stays the same inside and outside the VM); the guest address is the slot the
    domain gives it. Another UUID at a deployed address is a replaced board; an address with no GPU a lost one.
    """
    s, name = "drift", "GPUs by UUID and PCI address"
    if not x.gpu_bus_ids:
        return None if not x.gpu_count else Result(
            s, name, SKIP, "the stack's gpuInventory output records no GPU addresses (a stack deployed before it did)")
    q = ev.guest.get("nvidia-smi-q")
    if q is None or q.rc != 0:
        return _missing(s, name, "nvidia-smi-q", ev)
    _, q_gpus = query_gpus(q.stdout)
    now = {normalize_pci(g.bus_id): g.uuid for g in q_gpus if g.bus_id}
    replaced, lost = [], []
    for uuid, addr in x.gpu_bus_ids:
        if addr not in now:
            lost.append(f"{addr} ({uuid}) is gone")
        elif now[addr] != uuid:
            replaced.append(f"{addr} was {uuid}, is {now[addr]}")
    if lost:
        return Result(s, name, FAIL, "; ".join(lost + replaced),
                      "a lost GPU: seed 003 step 2 (guest driver above: Xid 79 fallen off the bus, `dmesg | grep -i nvrm`), "
                      "then the hostdevs on the hypervisor; drain and reboot the VM, and if it stays lost remove it from vms[].gpus")
    if replaced:
        return Result(s, name, FAIL, "replaced board: " + "; ".join(replaced),
                      "a board was swapped at the same address (an RMA, a moved card): check the new one (seed 003 step 2), "
                      "then record it: `kubectl annotate node <vm> gpu-stack.io/gpu-uuids-` and `pulumi up --replace '<urn of <vm>-guest-verify>'`, "
                      "which re-runs verify: it writes gpuInventory and the gpu-stack.io/gpu-uuids annotation anew (docs/OPERATIONS.md, Drift)")
    return Result(s, name, PASS, f"{len(x.gpu_bus_ids)} GPUs at their deployed addresses with their deployed UUIDs")


def _annotation_results(x: Expected, ev: Evidence) -> list[Result]:
    """The planned versions recorded on the Node (NODE_ANNOTATIONS) against this config: an older record means the
    node's upgrade path has not run since the config changed."""
    node = ev.k8s.get("node")
    if not node:
        return []
    notes = (node.get("metadata") or {}).get("annotations") or {}
    want = {"driver": x.driver_version if x.gpu_count else None, "fabricmanager": x.driver_version if x.fabricmanager_package else None,
            "toolkit": x.toolkit_version, "kubernetes": x.kubernetes_version}
    missing, stale = [], []
    for what, value in want.items():
        if not value:
            continue
        have = notes.get(NODE_ANNOTATIONS[what])
        if have is None:
            missing.append(NODE_ANNOTATIONS[what])
        elif have != value:
            stale.append(f"{NODE_ANNOTATIONS[what]}={have}, plan {value}")
    if stale:
        return [Result("drift", "recorded plan (node annotations)", WARN, "; ".join(stale),
                       "the config changed since this node's upgrade path last ran: `pulumi up` (read `make plan` rollout.json first)")]
    if missing:
        return [Result("drift", "recorded plan (node annotations)", WARN, f"not recorded: {', '.join(missing)}",
                       "a node bootstrapped before gpu-stack recorded them: the next `pulumi up` that runs the upgrade path writes them")]
    return [Result("drift", "recorded plan (node annotations)", PASS, "the node's gpu-stack.io/expected-* annotations match the plan")]


def check_drift(x: Expected, ev: Evidence) -> list[Result]:
    s = "drift"
    if not ev.guest:
        return [Result(s, "drift checks", SKIP, "guest not reachable (see guest driver)")]
    r = ev.guest.get("packages")
    pkgs = parse_packages(r.stdout) if r is not None else None
    out = _version_results(x, ev, pkgs)
    if pkgs is None:
        out.append(_missing(s, "package versions", "packages", ev))
    gpu = _gpu_identity(x, ev)
    if gpu is not None:
        out.append(gpu)
    out += _annotation_results(x, ev)
    return out


# ----------------------------------------------------------------------------------------------------------
# step 7: evidence, redacted

_REDACTIONS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S), "[redacted private key]"),
    (re.compile(r"((?:client-key-data|client-certificate-data|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+", re.I), r"\1[redacted]"),
    (re.compile(r"(?i)(authorization:\s*bearer\s+)\S+"), r"\1[redacted]"),
    (re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"), "[redacted bootstrap token]"),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Known secret values (from the stack) first, then anything shaped like a key, token or password."""
    for value in sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text


def evidence_files(x: Expected, ev: Evidence, results: list[Result]) -> dict[str, str]:
    """Seed 003 step 7: plugin logs, nvidia-smi -q, pod events, a node allocatable snapshot, dmesg Xid lines."""
    files: dict[str, str] = {}
    for key in ("nvidia-smi-q", "nvidia-smi-L", "nvidia-smi-topo", "nvidia-smi-nvlink", "fabricmanager"):
        if key in ev.guest:
            files[f"guest/{key}.txt"] = ev.guest[key].stdout
    if "dmesg" in ev.guest:
        files["guest/dmesg-xid.txt"] = "\n".join(e.line for e in parse_xid_lines(ev.guest["dmesg"].stdout)) + "\n"
    for pod, log in sorted(ev.plugin_logs.items()):
        files[f"kubernetes/plugin-logs/{pod}.log"] = log
    node = ev.k8s.get("node") or {}
    files["kubernetes/node-allocatable.json"] = json.dumps(
        {"node": x.vm, "capacity": (node.get("status") or {}).get("capacity"), "allocatable": (node.get("status") or {}).get("allocatable"),
         "allocated": {f"{p['metadata'].get('namespace')}/{p['metadata']['name']}": _requests(p, x.resource)
                       for p in ev.k8s.get("pods") or [] if _requests(p, x.resource) and (p.get("spec") or {}).get("nodeName") == x.vm}},
        indent=2, sort_keys=True) + "\n"
    files["kubernetes/events.json"] = json.dumps(ev.k8s.get("events") or [], indent=2, sort_keys=True) + "\n"
    # issue 27: the burn-in gate's verdict (the node's gpu-stack.io/burn-in label and annotation) and its Jobs' output
    burn_in_logs = {k: v for k, v in sorted(ev.pod_logs.items()) if k.startswith("gpu-stack-burnin/")}
    meta = node.get("metadata") or {}
    if burn_in_logs or "gpu-stack.io/burn-in" in (meta.get("labels") or {}):
        files["kubernetes/burn-in.txt"] = "".join(
            [f"node {x.vm}: burn-in {(meta.get('labels') or {}).get('gpu-stack.io/burn-in', 'not recorded')}\n"]
            + [f"--- {k} ---\n{v.rstrip()}\n" for k, v in burn_in_logs.items()])
    files["results.json"] = json.dumps([r.as_dict() for r in results], indent=2) + "\n"
    return files
