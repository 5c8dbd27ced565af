"""One rule for IOMMU-group membership: the preflight and the doctor agree on the same real groups (issue 26 item 3).

The host is the captured HGX H100 listing (tests/fixtures/host-facts/, PROVENANCE.md):
`IOMMU Group N <lspci -nns line>` for 8 H100s and 4 NVSwitches, with two groups that
hold two GPUs each (29 and 58) and four NVSwitches whose class is `Bridge [0680]`.
Each group is fed to the preflight (render/iommu.resolve_passthrough, with node
devices as libvirt or host facts give them) and to the doctor (doctor/diagnosis,
with what its SSH commands print on such a host: the group's `ls` and each
member's sysfs `class`), and the two must name the same blocking members.

The capture was filtered with `grep NVIDIA`, so a group's PCI bridges (PCIe switch
ports) are not in it. The bridge case adds one to a real group, declared here
(`SWITCH_PORT`, composed, not captured): a PCIe switch downstream port, class 0x060400.
"""

from __future__ import annotations

import re

import pytest

from doctor.diagnosis import PASS, WARN, CommandResult, Evidence, Expected, check_hypervisor, host_commands, parse_group_classes
from render.iommu import NodeDevice, is_harmless_bridge, resolve_passthrough
from config.models import Vm
from tests.support.host_sandbox import LISTING, parse_iommu_listing

ENTRIES = parse_iommu_listing(LISTING.read_text())
# declared, not captured: a PCIe switch downstream port above 0000:41:00.0 in its group 17 (see the module docstring)
SWITCH_PORT = {"address": "0000:40:01.0", "group": "17", "cls": "0604", "vendor": "1000", "desc": "PCIe switch downstream port"}


def host(extra: tuple[dict, ...] = (), regroup: dict[str, int] | None = None) -> dict[str, NodeDevice]:
    """The captured host as node devices (what the preflight reads), optionally with declared changes."""
    rows = [dict(e) for e in ENTRIES] + [dict(e) for e in extra]
    for r in rows:
        r["group"] = int((regroup or {}).get(r["address"], r["group"]))
    members: dict[int, list[str]] = {}
    for r in rows:
        members.setdefault(r["group"], []).append(r["address"])
    return {r["address"]: NodeDevice(address=r["address"], vendor_id=int(r["vendor"], 16), class_code=int(r["cls"], 16) << 8,
                                     product=r["desc"], numa_node=None, iommu_group=r["group"],
                                     group_members=tuple(sorted(members[r["group"]])))
            for r in rows}


def sysfs_evidence(devices: dict[str, NodeDevice], addresses: tuple[str, ...]) -> Evidence:
    """What the doctor's host commands print on that host (readlink, ls, grep -H . …/class), keyed as host_commands() keys them."""
    ev: dict[str, CommandResult] = {}
    commands = host_commands("vm", addresses)
    for a in addresses:
        d = devices[a]
        ev[f"driver {a}"] = CommandResult(commands[f"driver {a}"], 0, "../../../bus/pci/drivers/vfio-pci\n")
        ev[f"iommu-group-id {a}"] = CommandResult(commands[f"iommu-group-id {a}"], 0, f"../../../../kernel/iommu_groups/{d.iommu_group}\n")
        ev[f"iommu-group {a}"] = CommandResult(commands[f"iommu-group {a}"], 0, "".join(m + "\n" for m in d.group_members))
        ev[f"iommu-group-class {a}"] = CommandResult(commands[f"iommu-group-class {a}"], 0, "".join(
            f"/sys/bus/pci/devices/{a}/iommu_group/devices/{m}/class:0x{devices[m].class_code:06x}\n" for m in d.group_members))
    return Evidence(host=ev)


def vm(name: str, addresses: tuple[str, ...], devices: dict[str, NodeDevice]) -> Vm:
    gpus = [{"address": a, "model": "H100-SXM5-80GB"} for a in addresses if devices[a].class_code >> 8 == 0x0302]
    switches = [{"address": a} for a in addresses if devices[a].class_code >> 8 == 0x0680]
    return Vm.model_validate({"name": name, "host": "hgx", "vcpus": 8, "memoryGib": 64, "gpus": gpus, "nvswitches": switches})


def both(devices: dict[str, NodeDevice], addresses: tuple[str, ...], elsewhere: dict[str, str] | None = None) -> tuple[set[str], set[str], str]:
    """(members the preflight refuses, members the doctor flags, the doctor's 'IOMMU groups' status)."""
    elsewhere = elsewhere or {}
    _, issues = resolve_passthrough(0, vm("vm", addresses, devices), devices, elsewhere)
    preflight = {re.search(r"also holds (\S+)", i.message).group(1) for i in issues}
    x = Expected(vm="vm", gpu_count=len(addresses), host_addresses=addresses, assigned_elsewhere=elsewhere)
    result = next(r for r in check_hypervisor(x, sysfs_evidence(devices, addresses)) if r.check == "IOMMU groups")
    doctor = set(re.findall(r"shares its group with (\S+)", result.evidence)) if result.status != PASS else set()
    return preflight, doctor, result.status


REAL = host()


@pytest.mark.parametrize("addresses,elsewhere,blocked", [
    (("0000:41:00.0",), {}, set()),                                   # group 17: the GPU alone
    (("0000:11:00.0",), {}, {"0000:12:00.0"}),                        # group 29: its other GPU not given
    (("0000:11:00.0", "0000:12:00.0"), {}, set()),                    # group 29 whole
    (("0000:86:00.0",), {"0000:87:00.0": "vms[1] (other)"}, {"0000:87:00.0"}),  # group 58 split across two VMs
    (("0000:41:00.0", "0000:05:00.0"), {}, set()),                    # an NVSwitch (Bridge [0680]) given with a GPU
], ids=["alone", "shared-half", "shared-whole", "shared-two-vms", "nvswitch"])
def test_preflight_and_doctor_agree_on_the_captured_groups(addresses, elsewhere, blocked):
    preflight, doctor, status = both(REAL, addresses, elsewhere)
    assert preflight == doctor == blocked
    assert status == (WARN if blocked else PASS)


def test_a_pci_bridge_in_a_real_group_is_accepted_by_both():
    """Group 17 with a PCIe switch port: the preflight leaves the bridge on the host, so the doctor must not warn (it did)."""
    devices = host(extra=(SWITCH_PORT,))
    assert devices["0000:41:00.0"].group_members == ("0000:40:01.0", "0000:41:00.0")
    preflight, doctor, status = both(devices, ("0000:41:00.0",))
    assert preflight == doctor == set() and status == PASS
    hostdevs, _ = resolve_passthrough(0, vm("vm", ("0000:41:00.0",), devices), devices, {})
    assert hostdevs == ("0000:41:00.0",)  # the bridge is not attached
    ev = sysfs_evidence(devices, ("0000:41:00.0",))
    r = next(r for r in check_hypervisor(Expected(vm="vm", gpu_count=1, host_addresses=("0000:41:00.0",)), ev) if r.check == "IOMMU groups")
    assert r.evidence.endswith("PCI bridges left on the host: 0000:40:01.0")


def test_an_nvswitch_is_a_bridge_class_but_not_a_harmless_bridge():
    """The capture's NVSwitch reads `Bridge [0680]`: a GPU group holding one (declared regroup) blocks in both, not skipped."""
    devices = host(regroup={"0000:05:00.0": 17})
    assert not is_harmless_bridge(devices["0000:05:00.0"].class_code)
    preflight, doctor, status = both(devices, ("0000:41:00.0",))
    assert preflight == doctor == {"0000:05:00.0"} and status == WARN


def test_an_unreadable_class_counts_as_no_bridge():
    """As the preflight counts a member it has no node device for: the doctor warns rather than passes."""
    devices = host(extra=(SWITCH_PORT,))
    ev = sysfs_evidence(devices, ("0000:41:00.0",))
    ev.host["iommu-group-class 0000:41:00.0"] = CommandResult("grep", 2, "", "grep: …: No such file or directory\n")
    r = next(r for r in check_hypervisor(Expected(vm="vm", gpu_count=1, host_addresses=("0000:41:00.0",)), ev) if r.check == "IOMMU groups")
    assert r.status == WARN and "0000:40:01.0" in r.evidence


def test_group_classes_parse_the_grep_output():
    text = ("/sys/bus/pci/devices/0000:41:00.0/iommu_group/devices/0000:40:01.0/class:0x060400\n"
            "/sys/bus/pci/devices/0000:41:00.0/iommu_group/devices/0000:41:00.0/class:0x030200\n")
    assert parse_group_classes(text) == {"0000:40:01.0": 0x060400, "0000:41:00.0": 0x030200}
