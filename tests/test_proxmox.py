"""The Proxmox VE backend of GpuPassthroughVm (issue 28) under Pulumi's mock monitor, preview and update.

The program builds real pulumi_proxmoxve.VmLegacyArgs (the pinned SDK's own input types, every value checked
against their annotations); the mock answers getVersion and getPci as a node would (hypervisors/proxmox/mock.py).
The QEMU arguments the VM hands Proxmox for the 64-bit MMIO window (PVE `args`, appended verbatim to QEMU's
command line: qemu-server QemuServer.pm) are run under a real QEMU (TCG) with OVMF, as the libvirt domain's are
in tests/test_domain_libvirt.py: QEMU takes the hole, and OVMF places its aperture where the fw_cfg file says.
"""

from __future__ import annotations

import collections.abc
import copy
import json
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import time
import typing

import pulumi
import pulumi_proxmoxve as proxmoxve
import pytest

from config.errors import ConfigError
from config.models import Host, Vm
from hypervisors.proxmox.machine import ProxmoxTarget, vm_legacy_args
from hypervisors.proxmox.mock import GET_PCI, pci_row
from hypervisors.proxmox.render import KVM_ARGUMENT_REASONS, kvm_arguments_text
from render.identity import derived_mac
from render.mmio import phys_bits_needed
from render.numa import place_host
from render.vm_plan import plan_vm
from tests.conftest import DEFAULT_SECRETS, require_tool, run_stack, stack_file
from tools.mockrun import SECRET_SIG

PVM = "proxmoxve:index/vmLegacy:VmLegacy"
FILE = "proxmoxve:index/fileLegacy:FileLegacy"
SECRETS = {**DEFAULT_SECRETS, "proxmoxPassword": "test-root-password"}
NODE = "hgx-h800-1"


@pytest.fixture
def pve() -> dict:
    return copy.deepcopy(stack_file("proxmox"))


def run(raw: dict, **kw):
    kw.setdefault("secrets", SECRETS)
    return run_stack(raw, **kw)


def machine(result) -> dict:
    [vm] = result.of_type(PVM)
    return vm.inputs


def refused(raw: dict, **kw) -> dict[str, str]:
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run(raw, on_register=lambda t, n: registered.append(t), **kw)
    assert PVM not in registered and FILE not in registered, "no VM or snippet is declared when a check or the preflight fails"
    return {i.path: i.message for i in info.value.issues}


def pci_of(raw: dict) -> dict[str, list[dict]]:
    """getPci's rows for the stack's node: every configured device in a group of its own."""
    vm = raw["vms"][0]
    return {NODE: [pci_row(d["address"], d.get("model", "NVSwitch-Gen3"), 10 + i) for i, d in enumerate((*vm["gpus"], *vm["nvswitches"]))]}


# --- the mapping (seed 000's 8 x H800 + 4 NVSwitch node) ------------------------------


@pytest.mark.parametrize("preview", [True, False])
def test_seed000_on_proxmox_is_q35_ovmf_without_enrolled_keys_with_every_device_on_pcie(pve, preview):
    vm = machine(run(pve, preview=preview))
    assert vm["machine"] == "q35" and vm["bios"] == "ovmf"
    assert vm["efiDisk"]["type"] == "4m" and vm["efiDisk"]["preEnrolledKeys"] is False
    ids = [h["id"] for h in vm["hostpcis"]]
    raw_vm = pve["vms"][0]
    assert ids == [d["address"] for d in (*raw_vm["gpus"], *raw_vm["nvswitches"])]
    assert [h["device"] for h in vm["hostpcis"]] == [f"hostpci{i}" for i in range(12)]
    # set explicitly: bpg v0.111.1 sends an unset rombar as rombar=0 (vm.go vmGetHostPCIDeviceObjects)
    assert all(h["pcie"] is True and h["rombar"] is True and h["xvga"] is False for h in vm["hostpcis"])


def test_seed000_numa_nodes_are_bound_to_the_gpus_host_nodes_with_the_placements_cpus(pve):
    vm = machine(run(pve))
    host, vms = Host.model_validate(pve["hosts"][0]), [(0, Vm.model_validate(pve["vms"][0]))]
    [placement] = place_host(0, host, vms)[0].values()
    assert vm["cpu"]["type"] == "host" and vm["cpu"]["numa"] is True and vm["cpu"]["sockets"] == 2 and vm["cpu"]["cores"] == 32
    assert [(n["device"], n["hostnodes"], n["policy"], n["memory"]) for n in vm["numas"]] == [("numa0", "0", "bind", 131072), ("numa1", "1", "bind", 131072)]
    assert sum(n["memory"] for n in vm["numas"]) == vm["memory"]["dedicated"] == 256 * 1024, "qemu-server wants the nodes' memory to add up to the VM's"
    assert [n["cpus"] for n in vm["numas"]] == ["0-31", "32-63"]
    affinity = {c for part in vm["cpu"]["affinity"].split(",") for c in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)}
    assert affinity == {c for cell in placement.cells for c in cell.host_cpus}
    assert not affinity & {0, 56, 112, 168}, "hosts[].reservedCpus stay the host's"
    assert vm["memory"]["floating"] == 0 and "hugepages" not in vm["memory"]


def test_hugepages_where_asked(pve):
    pve["vms"][0]["numa"] = {"hugepages1g": True}
    assert machine(run(pve))["memory"]["hugepages"] == "1024"


def test_the_mmio_window_is_two_raw_qemu_arguments_from_the_bars(pve):
    vm = machine(run(pve))
    assert vm["kvmArguments"] == "-global q35-pcihost.pci-hole64-size=2048G -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=2097152"
    assert "-cpu" not in shlex.split(vm["kvmArguments"]), "a second -cpu would replace Proxmox's own (qemu-server 9.1.14 changelog)"


def test_no_devices_no_raw_arguments(pve):
    pve["vms"][0]["gpus"], pve["vms"][0]["nvswitches"] = [], []
    vm = machine(run(pve))
    assert "kvmArguments" not in vm and "hostpcis" not in vm and "affinity" not in vm["cpu"]


def test_the_stable_mac_and_the_machine_uuid(pve):
    del pve["vms"][0]["network"]["mac"]
    a, b = machine(run(pve, stack="s1")), machine(run(pve, stack="s1"))
    assert a["networkDevices"] == b["networkDevices"] == [{"bridge": "vmbr0", "macAddress": derived_mac("s1", "ubuntu-gpu"), "model": "virtio"}]
    assert a["smbios"]["uuid"] == b["smbios"]["uuid"]


def test_cloud_init_user_data_with_the_host_key_is_a_secret_snippet(pve):
    result = run(pve, preview=False)
    files = {f.name: f for f in result.of_type(FILE)}
    user, meta = files["ubuntu-gpu-user-data"], files["ubuntu-gpu-meta-data"]
    assert user.inputs["sourceRaw"][SECRET_SIG], "the user-data holds the guest's SSH host private key"
    data = user.inputs["sourceRaw"]["value"]["data"]
    assert "ssh_keys:" in data and "ed25519_private" in data
    assert "sourceRaw" in user.additional_secret_outputs
    assert user.inputs["contentType"] == meta.inputs["contentType"] == "snippets" and user.inputs["datastoreId"] == "local"
    init = machine(result)["initialization"]
    assert (init["userDataFileId"], init["metaDataFileId"]) == (f"{user.name}-id", f"{meta.name}-id"), "the VM boots with these two snippets"


def test_without_an_address_the_guest_agent_reports_it(pve):
    del pve["vms"][0]["network"]["address"]
    result = run(pve, preview=False)
    assert machine(result)["agent"] == {"enabled": True}
    assert result.outputs["vms"]["ubuntu-gpu"]["ip"].startswith("192.168.122.")


def test_production_protects_the_vm(pve):
    result = run(pve)
    [vm] = result.of_type(PVM)
    assert vm.protect and vm.retain_on_delete and vm.inputs["protection"] is True


def test_a_gpus_other_function_in_its_group_joins_its_hostpci(pve):
    pci = pci_of(pve)
    gpu = pci[NODE][0]
    pci[NODE].append(pci_row("0000:18:00.1", "H800-SXM5-80GB", gpu["iommuGroup"], class_code=0x040300))
    hostpcis = machine(run(pve, proxmox_pci=pci))["hostpcis"]
    assert hostpcis[0]["id"] == "0000:18:00.0;0000:18:00.1" and len(hostpcis) == 12


def test_the_preflight_asks_for_every_class_so_the_nvswitches_are_seen(pve):
    result = run(pve)
    [(token, args)] = [c for c in result.calls if c[0] == GET_PCI]
    assert args["nodeName"] == NODE and args["pciClassBlacklists"] == []


# --- the pinned SDK's own input types ---------------------------------------------------


def _members(hint) -> tuple:
    """The plain types a pulumi.Input[...] annotation accepts (Input[T] = Union[T, Awaitable[T], Output[T]])."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union:
        return tuple(m for a in args for m in _members(a))
    return (hint,)


def _check(value, hint, where: str) -> None:
    for m in _members(hint):
        origin = typing.get_origin(m)
        if m is type(None) and value is None:
            return
        if origin in (list, collections.abc.Sequence) and isinstance(value, list):
            for i, item in enumerate(value):
                _check(item, typing.get_args(m)[0], f"{where}[{i}]")
            return
        if isinstance(m, type) and m.__module__.startswith("pulumi_proxmoxve") and isinstance(value, m):
            check_args(value, where)
            return
        if m in (str, int, float) and isinstance(value, m) and not isinstance(value, bool):
            return
        if m is bool and isinstance(value, bool):
            return
        if isinstance(value, pulumi.Output) and origin is pulumi.Output:
            return
    raise AssertionError(f"{where}: {value!r} is not a {hint}")


def check_args(args, where: str = "VmLegacyArgs") -> None:
    """Every value set on an SDK input type matches its annotation, recursively."""
    hints = typing.get_type_hints(type(args).__init__)  # resolved in the SDK module's own namespace
    for name, hint in hints.items():
        value = pulumi.get(args, name) if hasattr(type(args), name) else None
        if value is not None:
            _check(value, hint, f"{where}.{name}")


def test_the_mapping_builds_the_sdks_own_input_types(pve):
    """Every key is a parameter of the SDK's Args classes (a misspelt one raises TypeError), every value of its type."""
    pve["vms"][0]["numa"] = {"hugepages1g": True}
    host, vm = Host.model_validate(pve["hosts"][0]), Vm.model_validate(pve["vms"][0])
    [placement] = place_host(0, host, [(0, vm)])[0].values()
    plan = plan_vm(vm, derived_mac=derived_mac("t", vm.name), project="gpu-stack", stack="t", placement=placement,
                   ssh_user="u", ssh_public_key="ssh-ed25519 AAAA u")
    devices = tuple(d.address for d in (*vm.gpus, *vm.nvswitches))
    args = vm_legacy_args(plan, vm, host, ProxmoxTarget(devices), "local:snippets/u.yaml", "local:snippets/m.yaml", production=True)
    assert isinstance(args, proxmoxve.VmLegacyArgs)
    check_args(args)
    assert all(isinstance(h, proxmoxve.VmLegacyHostpciArgs) for h in args.hostpcis) and len(args.hostpcis) == 12
    assert isinstance(args.efi_disk, proxmoxve.VmLegacyEfiDiskArgs) and isinstance(args.memory, proxmoxve.VmLegacyMemoryArgs)
    with pytest.raises(TypeError):
        proxmoxve.VmLegacyHostpciArgs(device="hostpci0", id="0000:18:00.0", rom_bar=True)  # not the SDK's name (rombar)
    with pytest.raises(AssertionError):
        check_args(proxmoxve.VmLegacyNumaArgs(cpus="0-31", device="numa0", memory="131072"))  # memory is an int (MiB)


# --- refused, with the key named --------------------------------------------------------


def test_an_api_token_alone_is_refused_naming_why(pve):
    message = refused(pve, secrets={**DEFAULT_SECRETS, "proxmoxApiToken": "root@pam!gpu=00000000-0000-0000-0000-000000000000"})["proxmoxPassword"]
    assert "proxmoxApiToken alone" in message and "kvm_arguments" in message and "only root can set" in message and "Qemu.pm" in message


def test_no_credentials_is_refused(pve):
    assert "root@pam" in refused(pve, secrets=DEFAULT_SECRETS)["proxmoxPassword"]


def test_a_vm_without_devices_may_use_a_token(pve):
    pve["vms"][0]["gpus"], pve["vms"][0]["nvswitches"] = [], []
    machine(run(pve, secrets={**DEFAULT_SECRETS, "proxmoxApiToken": "gpu@pve!gpu=00000000-0000-0000-0000-000000000000"}))


def test_a_declared_release_below_the_minimum_is_refused(pve):
    pve["hosts"][0]["proxmox"]["pveVersion"] = "7.4"
    assert "needs Proxmox VE 8.0" in refused(pve)["hosts[0].proxmox.pveVersion"]


def test_the_nodes_release_below_the_minimum_is_refused_at_preview(pve):
    del pve["hosts"][0]["proxmox"]["pveVersion"]
    assert "runs Proxmox VE 7.4" in refused(pve, proxmox_release="7.4")["hosts[0].proxmox.endpoint"]


def test_a_declared_release_other_than_the_nodes_is_refused(pve):
    assert "runs Proxmox VE 9.2" in refused(pve, proxmox_release="9.2")["hosts[0].proxmox.pveVersion"]


def test_a_device_the_node_lacks_is_refused(pve):
    pci = pci_of(pve)
    pci[NODE] = pci[NODE][1:]
    assert "is not a PCI device of node hgx-h800-1" in refused(pve, proxmox_pci=pci)["vms[0].gpus[0].address"]


def test_the_default_blacklist_would_hide_the_nvswitches(pve):
    """What the preflight avoids: getPci with the provider's default blacklist (05;06;0b) drops class 0x0680."""
    from hypervisors.proxmox.mock import Mock

    mock = Mock({}, {"proxmox_pci": pci_of(pve)})
    rows = mock.invoke(GET_PCI, {"nodeName": NODE})["devices"]
    assert len(rows) == 8 and not any(r["class"].startswith("0x06") for r in rows)


def test_iommu_off_is_refused(pve):
    pci = pci_of(pve)
    for row in pci[NODE]:
        row["iommuGroup"] = -1
    assert "IOMMU is off" in refused(pve, proxmox_pci=pci)["hosts[0]"]


def test_a_group_shared_with_another_device_is_refused(pve):
    pci = pci_of(pve)
    pci[NODE].append(pci_row("0000:19:00.0", "NIC", pci[NODE][0]["iommuGroup"], class_code=0x020000, vendor=0x15B3))
    issues = refused(pve, proxmox_pci=pci)
    assert any("0000:19:00.0" in m for k, m in issues.items() if k.startswith("vms[0].gpus[0]")), issues


def test_exposing_gpu_affinity_is_libvirt_only(pve):
    pve["vms"][0]["numa"] = {"exposeGpuAffinity": True}
    assert "print_pcie_root_port" in refused(pve)["vms[0].numa.exposeGpuAffinity"]


def test_a_hidden_hypervisor_is_refused(pve):
    pve["vms"][0]["kvmHidden"] = True
    assert "hidden=1" in refused(pve)["vms[0].kvmHidden"]


def test_a_libvirt_network_name_is_refused(pve):
    pve["vms"][0]["network"]["name"] = "default-br"
    assert "proxmox.bridge" in refused(pve)["vms[0].network.name"]


def test_more_devices_than_hostpci_slots_is_refused_after_the_groups(pve):
    pci = pci_of(pve)
    for row in list(pci[NODE]):  # every GPU brings its audio function: 8 x 2 + 4 = 20 functions, still 12 devices
        if row["class"] == "0x030200":
            pci[NODE].append(pci_row(row["id"][:-1] + "1", "H800-SXM5-80GB", row["iommuGroup"], class_code=0x040300))
    assert len(machine(run(pve, proxmox_pci=pci))["hostpcis"]) == 12
    pve["vms"][0]["nvswitches"] += [{"address": f"0000:{0x09 + i:02x}:00.0", "numaNode": 0} for i in range(5)]
    assert "at most 16 hostpci" in refused(pve)["vms[0].gpus"]  # (and the board's NVSwitch count, at vms[0].nvswitches)


def test_a_proxmox_block_on_a_libvirt_host_is_refused(dev):
    dev["hosts"][0]["proxmox"] = {"endpoint": "https://pve.lab:8006/", "node": "pve", "image": "local:import/x.qcow2"}
    with pytest.raises(ConfigError) as info:
        run_stack(dev)
    assert any(i.path == "hosts[0].proxmox" and "only for kind proxmox" in i.message for i in info.value.issues)


# --- the raw QEMU arguments under a real QEMU (TCG) -------------------------------------


class Qemu:
    """qemu-system-x86_64 as qemu-server starts it for this VM, scaled down to run here under TCG: q35, OVMF 4m,
    one pcie-root-port as qemu-server adds per hostpci (PCI.pm print_pcie_root_port), and `args` last.

    The CPU stands in for `cpu: host` on the HGX host: 1 GiB pages (pdpe1gb, which every such host CPU has; qemu-server
    9.1.7 warns without it) and the phys-bits the host would pass through (host-phys-bits), scaled to the test's RAM.
    Seen here with OVMF 2022.11 (Debian 12): without pdpe1gb OVMF did not finish PCI enumeration in 60 s with the
    2 TiB aperture; docs/OPERATIONS.md says to keep cpu type host."""

    def __init__(self, tmp, phys_bits: int, args: str | None):
        self.tmp, self.sock = tmp, str(tmp / "qmp.sock")
        vars_copy = tmp / "vars.fd"
        shutil.copy("/usr/share/OVMF/OVMF_VARS_4M.fd", vars_copy)
        self.cmd = [
            require_tool("qemu-system-x86_64"), "-machine", "q35,accel=tcg", "-cpu", f"qemu64,+pdpe1gb,phys-bits={phys_bits}", "-m", "512",
            "-smp", "2", "-object", "memory-backend-ram,id=ram-node0,size=256M", "-numa", "node,nodeid=0,cpus=0,memdev=ram-node0",
            "-object", "memory-backend-ram,id=ram-node1,size=256M", "-numa", "node,nodeid=1,cpus=1,memdev=ram-node1",
            "-drive", "if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "-drive", f"if=pflash,unit=1,format=raw,file={vars_copy}",
            "-device", "pcie-root-port,id=ich9-pcie-port-1,addr=10.0,x-speed=16,x-width=32,multifunction=on,bus=pcie.0,port=1,chassis=1",
            "-nodefaults", "-display", "none", "-serial", "none", "-qmp", f"unix:{self.sock},server=on,wait=off",
            *(shlex.split(args) if args else []),
        ]

    def __enter__(self):
        for path in ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"):
            if not os.path.exists(path):
                from tests.conftest import missing_validator
                missing_validator(f"{path} is missing (.ci/run installs ovmf)")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def start_error(self, timeout: float = 20) -> str | None:
        """QEMU's own refusal, or None once its monitor answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.stderr.read()
            if os.path.exists(self.sock):
                return None
            time.sleep(0.2)
        raise AssertionError("QEMU neither started nor failed")

    def qmp(self, command: dict) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            f = s.makefile("rw")
            json.loads(f.readline())
            for c in ({"execute": "qmp_capabilities"}, command):
                f.write(json.dumps(c) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def hmp(self, line: str) -> str:
        return self.qmp({"execute": "human-monitor-command", "arguments": {"command-line": line}})["return"]

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def _seed000_args(pve) -> str:
    return machine(run(pve))["kvmArguments"]


def _root_port_window(q: Qemu, timeout: float = 120) -> int | None:
    """The 64-bit prefetchable window OVMF gave the root port, once it has run its PCI enumeration."""
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"prefetchable memory range \[0x([0-9a-f]+), 0x[0-9a-f]+\]", q.hmp("info pci"))
        if m and int(m.group(1), 16) >= 1 << 32:
            return int(m.group(1), 16)
        time.sleep(1)
    return None


def test_qemu_takes_the_hole_and_ovmf_places_its_aperture_where_fw_cfg_says(pve, tmp_path):
    args = _seed000_args(pve)
    bits = phys_bits_needed(memory_gib=1, hole_gib=2048)
    with Qemu(tmp_path, bits, args) as q:
        assert q.start_error() is None
        hole = q.qmp({"execute": "qom-get", "arguments": {"path": "/machine/q35", "property": "pci-hole64-size"}})
        assert hole["return"] == 2048 << 30
        window = _root_port_window(q)
        assert window is not None, "OVMF did not assign the root port's 64-bit window"
        # X-PciMmio64Mb=2097152: a 2 TiB aperture, which MemDetect.c aligns to its size: it starts at 2 TiB
        assert window == 2048 << 30, hex(window)


def test_without_the_fw_cfg_file_ovmf_keeps_a_window_too_small_for_the_bars(pve, tmp_path):
    """The control: only the -global argument. OVMF then sizes its aperture from CPUID phys-bits alone, 2^(bits-3)
    at the top of the address space (MemDetect.c PlatformDynamicMmioWindow): 512 GiB for the 42 bits this hole needs,
    less than the 1 TiB of BAR1 of eight H800 (config/catalog.py), so the GPUs' BARs would not fit."""
    args = " ".join(a for a in shlex.split(_seed000_args(pve)) if "X-PciMmio64Mb" not in a and a != "-fw_cfg")
    bits = phys_bits_needed(memory_gib=1, hole_gib=2048)
    with Qemu(tmp_path, bits, args) as q:
        assert q.start_error() is None
        window = _root_port_window(q)
    assert window is not None and window >= (1 << bits) - (1 << (bits - 3)), hex(window or 0)
    assert (1 << (bits - 3)) < 1024 << 30


def test_qemu_refuses_the_hole_with_one_phys_bit_fewer_than_computed(pve, tmp_path):
    with Qemu(tmp_path, phys_bits_needed(memory_gib=1, hole_gib=2048) - 1, _seed000_args(pve)) as q:
        error = q.start_error()
    assert error is not None and "phys-bits too low" in error


def test_every_raw_argument_has_its_reason(pve):
    from hypervisors.proxmox.plan_files import kvm_argument_rows

    rows = kvm_argument_rows(_seed000_args(pve))
    assert [r["reason"] for r in rows] == list(KVM_ARGUMENT_REASONS.values())
    assert kvm_arguments_text.__doc__ and "split_args" in kvm_arguments_text.__doc__


# --- rollout.json: what a change of the VmLegacy does to the VM (hypervisors/proxmox/rollout.py) -------------


def _rollout_against(tmp_path, base_text: str, new_text: str) -> dict:
    """rollout.json of `new_text` (a Pulumi.<stack>.yaml) planned against a git repo whose HEAD holds `base_text`."""
    import yaml

    from tools import mockrun
    from tools.plan import plan_config, rollout_json
    require_tool("git")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "Pulumi.t.yaml").write_text(base_text)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base"], check=True)
    values, secret_keys = plan_config(yaml.safe_load(new_text)["config"])
    result = mockrun.run(values, secret_keys, stack="t", preview=False)
    return json.loads(rollout_json("t", values, secret_keys, result, base="HEAD", root=tmp_path))


def test_a_proxmox_vm_change_is_reported_as_a_restart(tmp_path):
    """Less memory for the Proxmox VM changes its VmLegacy's memory and numas: bpg v0.111.1's vmUpdate reboots the VM
    for them, so rollout.json says "replace VM (restart)" (before, VmLegacy was not a VM type there: "nothing to run")."""
    from tests.conftest import ROOT

    text = (ROOT / "Pulumi.proxmox.yaml").read_text()
    assert text.count("memoryGib: 256") == 1
    doc = _rollout_against(tmp_path, text, text.replace("memoryGib: 256", "memoryGib: 192"))
    [entry] = [e for w in doc["waves"] for e in w["nodes"]]
    assert entry["action"] == "replace VM (restart)", entry
    assert entry["replace"].startswith("VmLegacy ubuntu-gpu-vm: ") and "memory" in entry["replace"] and "numas" in entry["replace"]
    assert "reboots the VM" in entry["replace"] and "v0.111.1" in entry["replace"]
    unchanged = _rollout_against(tmp_path / "same", text, text)
    assert [e["action"] for w in unchanged["waves"] for e in w["nodes"]] == ["nothing to run"]


def _vm_inputs() -> dict:
    rows = json.loads((pathlib.Path(__file__).parent / "golden" / "proxmox" / "resources.json").read_text())
    [row] = [r for r in rows if r["type"] == PVM]
    return row["inputs"]


@pytest.mark.parametrize("change, verdict", [
    (lambda i: i["efiDisk"].update(type="2m"), "efiDisk changed (replaced: ForceNew"),          # forceNewOnEFIDiskTypeChange
    (lambda i: i.update(nodeName="hgx-h800-2"), "nodeName changed (replaced: ForceNew"),         # ForceNewIf node_name, no migrate
    (lambda i: i["initialization"].update(userDataFileId="local:snippets/x.yaml"), "initialization changed (replaced"),
    (lambda i: i["disks"][0].update(fileId="local:iso/x.img"), "disks changed (replaced"),       # disk.file_id ForceNew
    (lambda i: i.update(kvmArguments="-global q35-pcihost.pci-hole64-size=4096G"), "kvmArguments changed (restarted"),
    (lambda i: i["efiDisk"].update(preEnrolledKeys=True), "efiDisk changed (restarted"),         # not its type: rebootRequired
    (lambda i: i["hostpcis"].pop(), "hostpcis changed (restarted"),
    (lambda i: i["cpu"].update(cores=16), "cpu changed (restarted"),                             # cpu not in the default hotplug
    (lambda i: i["disks"][0].update(size=600), "disks changed (may restart the VM"),
    (lambda i: i.update(tags=["gpu-stack", "x"], description="d"), None),                         # in place
    (lambda i: i["networkDevices"][0].update(macAddress="52:54:00:00:00:01"), None),              # hotplugged
    (lambda i: (i.update(hotplug="network,disk,usb,memory"), i["memory"].update(dedicated=300000)), None),
])
def test_the_vm_legacy_rule(change, verdict):
    from hypervisors.proxmox.rollout import replacement

    old = _vm_inputs()
    new = copy.deepcopy(old)
    change(new)
    why = replacement(old, new)
    assert why == verdict if verdict is None else why.startswith(verdict), why


# --- offline preflight: host facts from the node (hypervisors/proxmox/host-facts.sh) ------------------

from facts.host_facts import parse_host_facts  # noqa: E402
from tests.support.host_sandbox import (  # noqa: E402
    FIXTURES, LISTING, PVE_SCRIPT, captured_hgx_h100, parse_iommu_listing, pve_sandbox,
)
from tools import plan  # noqa: E402

CAPTURED = {e["address"]: e for e in parse_iommu_listing(LISTING.read_text())}
H100S = sorted(a for a, e in CAPTURED.items() if e["cls"] == "0302")
SWITCHES = sorted(a for a, e in CAPTURED.items() if e["cls"] == "0680")
SIX = [a for a in H100S if a not in ("0000:12:00.0", "0000:87:00.0")]  # one GPU of each shared group (29, 58)
CAPTURED_HOST = "hgx-h100-1"


def _node_facts(tmp_path: pathlib.Path, isolated: bool = False, **kw) -> pathlib.Path:
    """The collector's file, run on the captured HGX H100 host (tests/fixtures/host-facts) as a Proxmox VE node."""
    box = pve_sandbox(tmp_path / ("isolated" if isolated else "shared"), isolated=isolated, **kw)
    proc = box.run()
    assert proc.returncode == 0, proc.stderr
    assert not any(c.startswith("virsh") for c in box.calls), "a Proxmox VE node has no virsh"
    out = tmp_path / f"{CAPTURED_HOST}{'-isolated' if isolated else ''}.facts.json"
    out.write_text(proc.stdout)
    return out


def _on_captured_node(raw: dict, gpus: list[str]) -> dict:
    """Pulumi.proxmox.yaml's host and VM moved onto the captured node (same CPUs, NUMA layout and address bits)."""
    raw = copy.deepcopy(raw)
    host = raw["hosts"][0]
    host["name"] = CAPTURED_HOST
    host["proxmox"] = {**host["proxmox"], "node": CAPTURED_HOST, "endpoint": f"https://{CAPTURED_HOST}.lab.local:8006/"}
    vm = raw["vms"][0]
    vm["host"] = CAPTURED_HOST
    vm["gpus"] = [{"address": a, "model": "H100-SXM5-80GB", "numaNode": 0 if int(a[5:7], 16) < 0x80 else 1} for a in gpus]
    # the board's NVSwitches go with the whole board only (as tests/test_host_facts.py _host_stack)
    vm["nvswitches"] = [{"address": a, "numaNode": 0} for a in SWITCHES] if len(gpus) == len(H100S) else []
    if len(gpus) < len(H100S):
        raw["burnIn"] = {**raw.get("burnIn", {}), "nccl": False}  # a partial board has no sourced all-reduce figure
    return raw


def test_the_node_collector_is_shellcheck_clean():
    require_tool("shellcheck")
    proc = subprocess.run(["shellcheck", "-x", str(PVE_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_node_collector_records_what_the_libvirt_collector_records_without_virsh(tmp_path):
    """Same host, two collectors: the same IOMMU groups, classes, ids, NUMA nodes, BARs and host facts."""
    pve = parse_host_facts(_node_facts(tmp_path).read_text(), "pve")
    libvirt = parse_host_facts((FIXTURES / "hgx-h100-shared.json").read_text(), "libvirt")
    assert pve.pve_release == "9.1" and pve.libvirt_version is None and libvirt.pve_release is None
    assert list(pve.devices) == list(libvirt.devices)
    for address, dev in pve.devices.items():
        theirs = libvirt.devices[address]
        assert dev.bars == theirs.bars and dev.requested == theirs.requested and dev.driver == theirs.driver
        for field in ("vendor_id", "class_code", "product_id", "numa_node", "iommu_group", "group_members"):
            assert getattr(dev.node, field) == getattr(theirs.node, field), (address, field)
    assert pve.devices["0000:11:00.0"].node.group_members == ("0000:11:00.0", "0000:12:00.0")
    for field in ("phys_addr_bits", "numa_nodes", "smt_siblings", "iommu_enabled", "iommu_groups", "iommu_cmdline", "vfio_pci_available"):
        assert getattr(pve, field) == getattr(libvirt, field), field


def test_the_node_collector_takes_the_release_from_pveversion(tmp_path):
    doc = json.loads(_node_facts(tmp_path, pveversion="pve-manager/8.4.14/b502d23c55afcba1 (running kernel: 6.8.12-17-pve)\n").read_text())
    assert doc["proxmox"] | {"pveversion": ""} == {"release": "8.4", "managerVersion": "8.4.14", "node": CAPTURED_HOST, "pveversion": ""}
    assert doc["collector"] == "hypervisors/proxmox/host-facts.sh" and "libvirt" not in doc


def test_the_node_collector_refuses_a_host_without_pveversion(tmp_path):
    box = pve_sandbox(tmp_path, pveversion=None)
    proc = box.run()
    assert proc.returncode == 1 and proc.stdout == ""
    assert "pveversion not found: this is not a Proxmox VE node (on a libvirt host run scripts/host-facts.sh)" in proc.stderr


def test_the_node_collector_refuses_output_that_is_not_pveversions(tmp_path):
    proc = pve_sandbox(tmp_path, pveversion="9.1\n").run()
    assert proc.returncode == 1 and "`pveversion` does not print pve-manager/<version>/<repoid>" in proc.stderr


def test_node_facts_stand_in_for_getpci_with_no_invoke(pve, tmp_path):
    """The node's facts, not getPci: the mock's node has no device at all, yet every GPU is found, in its recorded group."""
    result = run(_on_captured_node(pve, H100S), host_facts=[_node_facts(tmp_path)], proxmox_pci={CAPTURED_HOST: []})
    hostpcis = machine(result)["hostpcis"]
    assert len(hostpcis) == 12  # 8 GPUs (the shared groups' members together in this VM) + 4 NVSwitches


def test_node_facts_refuse_a_shared_iommu_group(pve, tmp_path):
    issues = refused(_on_captured_node(pve, SIX), host_facts=[_node_facts(tmp_path)], proxmox_pci={CAPTURED_HOST: []})
    assert "IOMMU group 29 of 0000:11:00.0 also holds 0000:12:00.0" in issues[f"vms[0].gpus[{SIX.index('0000:11:00.0')}].address"]
    assert "IOMMU group 58 of 0000:86:00.0 also holds 0000:87:00.0" in issues[f"vms[0].gpus[{SIX.index('0000:86:00.0')}].address"]


def test_node_facts_check_the_real_bars(pve, tmp_path):
    raw = _on_captured_node(pve, H100S)
    for g in raw["vms"][0]["gpus"]:
        g["bar1Gib"] = 16  # the node's H100s have 128 GiB BAR1s: the config's 256 GiB hole is too small
    issues = refused(raw, host_facts=[_node_facts(tmp_path)], proxmox_pci={CAPTURED_HOST: []})
    assert "the 256 GiB 64-bit PCI hole cannot hold the real BARs" in issues["vms[0].gpus"] and "needs 2048 GiB" in issues["vms[0].gpus"]


def test_node_facts_check_the_gpus_numa_node(pve, tmp_path):
    raw = _on_captured_node(pve, H100S)
    raw["vms"][0]["gpus"][0]["numaNode"] = 1  # 0000:11:00.0 (bus 0x11) is on node 0
    issues = refused(raw, host_facts=[_node_facts(tmp_path)], proxmox_pci={CAPTURED_HOST: []})
    assert any("0000:11:00.0" in m for p, m in issues.items() if p.startswith("vms[0].gpus[0]")), issues


def test_node_facts_check_the_address_bits_and_the_numa_cpus(pve, tmp_path):
    raw = _on_captured_node(pve, H100S)
    raw["hosts"][0]["physAddrBits"] = 52
    issues = refused(raw, host_facts=[_node_facts(tmp_path)], proxmox_pci={CAPTURED_HOST: []})
    assert "record 46 physical address bits" in issues["hosts[0].physAddrBits"]


def test_node_facts_check_the_release(pve, tmp_path):
    old = _node_facts(tmp_path, pveversion="pve-manager/7.0-11/63d82f4e (running kernel: 5.11.22-4-pve)\n")
    issues = refused(_on_captured_node(pve, H100S), host_facts=[old], proxmox_pci={CAPTURED_HOST: []})
    assert "record Proxmox VE 7.0; set pveVersion: \"7.0\"" in issues["hosts[0].proxmox.pveVersion"]
    assert "runs Proxmox VE 7.0" in issues["hosts[0].proxmox.endpoint"]


def test_libvirt_collected_facts_are_refused_for_a_proxmox_host(pve):
    issues = refused(_on_captured_node(pve, H100S), host_facts=[FIXTURES / "hgx-h100-shared.json"], proxmox_pci={CAPTURED_HOST: []})
    assert issues == {"hosts[0]": f"host facts {FIXTURES / 'hgx-h100-shared.json'} were written by scripts/host-facts.sh (libvirt's: no Proxmox VE release); "
                                  f"collect {CAPTURED_HOST}'s facts on the node with hypervisors/proxmox/host-facts.sh"}


def _proxmox_stack_dir(tmp_path: pathlib.Path, gpus: list[str]) -> pathlib.Path:
    import yaml

    doc = yaml.safe_load((pathlib.Path(__file__).resolve().parent.parent / "Pulumi.proxmox.yaml").read_text())
    raw = {k.removeprefix("gpu-stack:"): v for k, v in doc["config"].items() if k.startswith("gpu-stack:")}
    moved = _on_captured_node(raw, gpus)
    for key in ("hosts", "vms", "burnIn"):
        if key in moved:
            doc["config"][f"gpu-stack:{key}"] = moved[key]
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "Pulumi.proxmox.yaml").write_text(yaml.safe_dump(doc))
    return stacks


def test_make_plan_proxmox_with_node_facts_refuses_shared_groups(tmp_path, capsys):
    stacks = _proxmox_stack_dir(tmp_path, SIX)
    rc = plan.main(["proxmox", "--stack-dir", str(stacks), "--out", str(tmp_path / "plan"), "--facts", str(_node_facts(tmp_path))])
    err = capsys.readouterr().err
    assert rc == 1
    assert "IOMMU group 29 of 0000:11:00.0 also holds 0000:12:00.0" in err and "IOMMU group 58 of 0000:86:00.0 also holds 0000:87:00.0" in err
    assert not (tmp_path / "plan" / "proxmox").exists()


def test_make_plan_proxmox_with_node_facts_accepts_isolated_groups_and_says_what_it_checked(tmp_path, capsys):
    stacks = _proxmox_stack_dir(tmp_path, SIX)
    facts = _node_facts(tmp_path, isolated=True)
    rc = plan.main(["proxmox", "--stack-dir", str(stacks), "--out", str(tmp_path / "plan"), "--facts", str(facts)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"host {CAPTURED_HOST}: Proxmox VE release, IOMMU groups, BARs, NUMA and address bits checked against {facts}" in out
    assert "assumed as configured" not in out
    vm = json.loads((tmp_path / "plan" / "proxmox" / "vms" / "ubuntu-gpu" / "proxmox.json").read_text())
    assert json.dumps(vm).count("0000:") >= 6
