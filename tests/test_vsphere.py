"""The vSphere backend of GpuPassthroughVm (seed 001) under Pulumi's mock monitor, preview and update.

The program builds real pulumi_vsphere.VirtualMachineArgs (the SDK's own input
types); the mock answers getDatacenter/getHost/getDatastore/getNetwork/
getVirtualMachine/getOvfVmTemplate/getHostPciDevice as a vSphere endpoint
would, getHostPciDevice with terraform-provider-vsphere's first-match rule.
"""

from __future__ import annotations

import base64
import copy
import re

import pulumi_vsphere as vsphere
import pytest
import yaml

from hypervisors.vsphere.render import derived_vmware_mac, in_vmware_static_range
from render.mmio import required_hole64_gib
from hypervisors.vsphere.render import EXTRA_CONFIG_REASONS
from config.models import Vm
from config.errors import ConfigError
from tests.conftest import DEFAULT_SECRETS, run_stack, stack_file
from hypervisors.vsphere.mock import vsphere_pci_device
from tools.mockrun import SECRET_SIG

VSVM = "vsphere:index/virtualMachine:VirtualMachine"
DOMAIN = "libvirt:index/domain:Domain"
PCI_INVOKE = "vsphere:index/getHostPciDevice:getHostPciDevice"
SECRETS = {**DEFAULT_SECRETS, "vsphereUser": "root", "vspherePassword": "test-vsphere-password",
           "joinToken": "abcdef.0123456789abcdef", "kubeconfig": "apiVersion: v1\nkind: Config\n"}
ESXI = "10.203.43.10"  # the seed's host, as vCenter's inventory names it


@pytest.fixture
def esxi() -> dict:
    return copy.deepcopy(stack_file("esxi"))


def run(raw: dict, **kw):
    kw.setdefault("secrets", SECRETS)
    return run_stack(raw, **kw)


def machine(result) -> dict:
    [vm] = result.of_type(VSVM)
    return vm


def extra_config(inputs: dict) -> dict:
    value = inputs["extraConfig"]
    assert value[SECRET_SIG], "extraConfig holds the user-data, so it travels as a secret"
    return value["value"]


def gpus(model: str, count: int) -> list[dict]:
    return [{"address": f"0000:{0x03 + 0x10 * i:02x}:00.0", "model": model, "numaNode": 0 if i < count / 2 or count == 1 else 1} for i in range(count)]


def with_gpus(raw: dict, devices: list[dict]) -> dict:
    """The VM's GPUs; a whole HGX board's GPUs come with the board's NVSwitches, as full passthrough needs
    (stacks/checks.py _check_board: NVIDIA Fabric Manager User Guide, Full Passthrough Virtualization Model)."""
    from config.catalog import NVSWITCH_BOARD

    raw["vms"][0]["gpus"] = devices
    switches = []
    board = NVSWITCH_BOARD.get(devices[0]["model"]) if devices else None
    if board is not None and len(devices) == board.gpus:
        switches = [{"address": f"0000:{0xe0 + i:02x}:00.0", "numaNode": 0} for i in range(board.nvswitches)]
    raw["vms"][0]["nvswitches"] = switches
    raw["hosts"][0]["vsphere"]["pciDevices"] = [d["address"] for d in (*devices, *switches)]
    return raw


# --- what seed 001 clicked in the UI --------------------------------------------


@pytest.mark.parametrize("preview", [True, False])
def test_seed001_vm_is_efi_without_secure_boot_and_fully_reserved(esxi, preview):
    result = run(esxi, preview=preview)
    vm = machine(result)
    assert vm.parent == "k8s-gpu-alma" and vm.provider == "vsphere-esxi-r730"
    i = vm.inputs
    assert i["firmware"] == "efi"
    assert i["efiSecureBootEnabled"] is False
    assert i["memory"] == 64 * 1024
    assert i["memoryReservation"] == i["memory"] and i["memoryReservationLockedToMax"] is True
    assert re.fullmatch(r"host-\d+", i["hostSystemId"]) and re.fullmatch(r"resgroup-\d+", i["resourcePoolId"])


@pytest.mark.parametrize("preview", [True, False])
def test_seed001_extra_config_has_the_three_keys_and_32g_for_one_p100(esxi, preview):
    extra = extra_config(machine(run(esxi, preview=preview)).inputs)
    assert extra["pciPassthru.use64bitMMIO"] == "TRUE"
    assert extra["pciPassthru.64bitMMIOSizeGB"] == "32"  # seed 001's value
    assert extra["hypervisor.cpuid.v0"] == "FALSE"  # the seed set it; Pulumi.esxi.yaml asks (kvmHidden)
    assert set(extra) <= set(EXTRA_CONFIG_REASONS)


@pytest.mark.parametrize("model,count,size", [("P100-PCIE-16GB", 1, 32), ("A100-PCIE-80GB", 1, 256), ("H100-SXM5-80GB", 8, 2048)])
@pytest.mark.parametrize("preview", [True, False])
def test_mmio_size_is_derived_from_the_bars_with_the_libvirt_sizing_code(esxi, model, count, size, preview):
    raw = with_gpus(esxi, gpus(model, count))
    del raw["vms"][0]["kvmHidden"]
    extra = extra_config(machine(run(raw, preview=preview)).inputs)
    vm = Vm.model_validate(raw["vms"][0])
    assert extra["pciPassthru.64bitMMIOSizeGB"] == str(required_hole64_gib(vm)) == str(size)
    assert extra["pciPassthru.use64bitMMIO"] == "TRUE"
    assert "hypervisor.cpuid.v0" not in extra, "data-centre GPUs do not need the hypervisor hidden"


def test_consumer_gpu_hides_the_hypervisor_by_catalog_default(esxi):
    raw = with_gpus(esxi, gpus("RTX-3090", 1))
    del raw["vms"][0]["kvmHidden"]
    assert extra_config(machine(run(raw)).inputs)["hypervisor.cpuid.v0"] == "FALSE"


def test_hidden_hypervisor_can_be_turned_off_for_a_consumer_gpu(esxi):
    raw = with_gpus(esxi, gpus("RTX-3090", 1))
    raw["vms"][0]["kvmHidden"] = False
    assert "hypervisor.cpuid.v0" not in extra_config(machine(run(raw)).inputs)


@pytest.mark.parametrize("preview", [True, False])
def test_pci_device_ids_come_from_get_host_pci_device(esxi, preview):
    host_devices = {ESXI: [vsphere_pci_device("0000:03:00.0", "P100-PCIE-16GB"), vsphere_pci_device("0000:82:00.0", "T4")]}
    result = run(esxi, preview=preview, vsphere_pci=host_devices)
    assert machine(result).inputs["pciDeviceIds"] == ["0000:03:00.0"]
    [(_, args)] = [c for c in result.calls if c[0] == PCI_INVOKE]
    assert args["hostId"] == machine(result).inputs["hostSystemId"] and args["vendorId"] == "10de" and re.search(args["nameRegex"], "GP100GL [Tesla P100 PCIe 16GB]")
    assert machine(result).provider == "vsphere-esxi-r730"


def test_eight_gpus_are_all_passed_through(esxi):
    raw = with_gpus(esxi, gpus("H100-SXM5-80GB", 8))
    ids = machine(run(raw)).inputs["pciDeviceIds"]
    assert ids[:8] == [g["address"] for g in raw["vms"][0]["gpus"]] and len(ids) == 8 + len(raw["vms"][0]["nvswitches"])


# --- guest identity -------------------------------------------------------------


def test_cloud_init_goes_through_guestinfo_with_the_pinned_host_key(esxi):
    result = run(esxi, preview=False)
    extra = extra_config(machine(result).inputs)
    assert extra["guestinfo.userdata.encoding"] == extra["guestinfo.metadata.encoding"] == "base64"
    user_data = base64.b64decode(extra["guestinfo.userdata"]).decode()
    assert user_data.startswith("#cloud-config\n")
    doc = yaml.safe_load(user_data)
    pinned = result.outputs["vms"]["k8s-gpu-alma"]["hostPublicKey"]
    assert doc["ssh_keys"]["ed25519_public"] == pinned
    assert doc["users"][0]["name"] == "almalinux"
    meta = yaml.safe_load(base64.b64decode(extra["guestinfo.metadata"]))
    assert meta == {"instance-id": "k8s-gpu-alma", "local-hostname": "k8s-gpu-alma"}
    # the guest bootstrap connects to the configured address and pins that key
    wait = result.named("k8s-gpu-alma-guest-wait-ssh").inputs["connection"]["value"]
    assert wait["host"] == "10.203.43.111" and wait["hostKey"] == pinned


def test_derived_mac_is_static_in_vmwares_range_and_stable_across_runs(esxi):
    first = machine(run(esxi)).inputs["networkInterfaces"][0]
    second = machine(run(esxi, preview=False)).inputs["networkInterfaces"][0]
    assert first["useStaticMac"] is True
    assert first["macAddress"] == second["macAddress"] == derived_vmware_mac("test", "k8s-gpu-alma")
    assert in_vmware_static_range(first["macAddress"])
    assert all(in_vmware_static_range(derived_vmware_mac(s, f"vm-{n}")) for s in ("dev", "prod") for n in range(300))


def test_explicit_mac_in_range_is_used(esxi):
    esxi["vms"][0]["network"]["mac"] = "00:50:56:3F:00:01"
    assert machine(run(esxi)).inputs["networkInterfaces"][0]["macAddress"] == "00:50:56:3f:00:01"


def test_cores_per_socket_and_latency_sensitivity_when_asked(esxi):
    assert "numCoresPerSocket" not in machine(run(esxi)).inputs
    esxi["vms"][0]["vsphere"] = {"numCoresPerSocket": 8, "latencySensitivity": "high"}
    i = machine(run(esxi)).inputs
    assert (i["numCoresPerSocket"], i["latencySensitivity"]) == (8, "high")


def test_cores_per_socket_follow_the_numa_placement(esxi):
    esxi["vms"][0]["numa"] = {"hostNodes": [0, 1]}
    assert machine(run(esxi)).inputs["numCoresPerSocket"] == 8  # 16 vCPUs over two guest cells


# --- templates, production ------------------------------------------------------


def vcenter_clone(raw: dict) -> dict:
    raw["hosts"][0]["vsphere"].update(cluster="gpu", template={"vm": "alma-9.6-template"})
    return raw


def test_clone_from_a_vm_template_takes_its_uuid_and_grows_the_disk(esxi):
    result = run(vcenter_clone(esxi))
    i = machine(result).inputs
    [(_, tpl_args)] = [c for c in result.calls if c[0] == "vsphere:index/getVirtualMachine:getVirtualMachine"]
    assert tpl_args["name"] == "alma-9.6-template" and tpl_args["datacenterId"].startswith("datacenter-")
    assert re.fullmatch(r"42[0-9a-f-]{34}", i["clone"]["templateUuid"])
    assert i["disks"] == [{"label": "disk0", "size": 200, "thinProvisioned": True, "eagerlyScrub": False, "keepOnRemove": False}]
    assert i["guestId"] == "rhel9_64Guest" and i["scsiType"] == "pvscsi"
    assert i["resourcePoolId"].startswith("resgroup-")  # the cluster's pool
    assert "ovfDeploy" not in i
    assert machine(result).ignore_changes == ["clone", "ovfDeploy"]  # a rebuilt template never replaces the node


def test_ovf_deploy_maps_the_ovf_network_and_takes_its_guest_id(esxi):
    esxi["hosts"][0]["vsphere"]["template"] = {"ovf": "http://mirror.lab.local/images/alma-9.6.ova", "ovfNetwork": "nat"}
    result = run(esxi)
    i = machine(result).inputs
    assert i["ovfDeploy"]["remoteOvfUrl"] == "http://mirror.lab.local/images/alma-9.6.ova"
    assert i["ovfDeploy"]["ovfNetworkMap"] == {"nat": i["networkInterfaces"][0]["networkId"]}
    assert i["datacenterId"].startswith("datacenter-") and "disks" not in i and "clone" not in i
    [(_, probe)] = [c for c in result.calls if c[0] == "vsphere:index/getOvfVmTemplate:getOvfVmTemplate"]
    assert probe["hostSystemId"] == i["hostSystemId"] and i["guestId"] == "rhel9_64Guest"


def test_a_direct_esxi_connection_is_refused_for_clone_and_ovf(esxi):
    esxi["hosts"][0]["vsphere"].update(endpoint="10.203.43.10", datacenter="ha-datacenter")
    assert "only through vCenter Server" in refused(esxi)["hosts[0].vsphere.datacenter"]


def test_production_protects_the_vm_and_keeps_its_disks(esxi):
    esxi["production"] = True
    result = run(vcenter_clone(esxi))
    vm = machine(result)
    assert vm.protect and vm.retain_on_delete
    assert vm.inputs["disks"][0]["keepOnRemove"] is True
    assert result.named("k8s-gpu-alma-host-key").protect


def test_not_production_protects_nothing(esxi):
    assert not any(r.protect for r in run(esxi).resources)


@pytest.mark.parametrize("template", [{"vm": "alma-9.6-template"}, {"ovf": "http://mirror.lab.local/alma.ova"}])
def test_the_mapping_builds_the_sdks_own_input_types(esxi, template):
    """Every key of the mapping is a VirtualMachineArgs parameter (a misspelt one raises TypeError)."""
    from hypervisors.vsphere.machine import VsphereTarget, virtual_machine_args
    from render.numa import Cell, Placement
    from render.vm_plan import plan_vm
    from hypervisors.vsphere.render import Inventory, TemplateInfo
    from config.models import Host

    esxi["hosts"][0]["vsphere"]["template"] = template
    host, vm = Host.model_validate(esxi["hosts"][0]), Vm.model_validate(esxi["vms"][0])
    plan = plan_vm(vm, derived_mac=derived_vmware_mac("t", vm.name), project="gpu-stack", stack="t",
                   placement=Placement((Cell(0, 0, tuple(range(16)), tuple(range(16)), 65536),)), ssh_user="u", ssh_public_key="ssh-ed25519 AAAA u")
    target = VsphereTarget(Inventory("dc", "host-1", "pool", "ds", "net"), TemplateInfo("rhel9_64Guest", "pvscsi", "uuid-1", 20, True, False), ("0000:03:00.0",))
    args = virtual_machine_args(plan, vm, host, target, "dXNlci1kYXRh", production=True)
    assert isinstance(args, vsphere.VirtualMachineArgs)
    assert all(isinstance(n, vsphere.VirtualMachineNetworkInterfaceArgs) for n in args.network_interfaces)
    if "vm" in template:
        assert isinstance(args.clone, vsphere.VirtualMachineCloneArgs) and args.disks[0].keep_on_remove is True
    else:
        assert isinstance(args.ovf_deploy, vsphere.VirtualMachineOvfDeployArgs) and args.disks is None
    with pytest.raises(TypeError):
        vsphere.VirtualMachineArgs(resource_pool_id="p", pci_device_id=["x"])  # Terraform's name, not the SDK's


# --- refused, with the key named ------------------------------------------------


def refused(raw: dict, **kw) -> dict[str, str]:
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run(raw, on_register=lambda t, n: registered.append(t), **kw)
    assert VSVM not in registered, "no VM is declared when preflight fails"
    return {i.path: i.message for i in info.value.issues}


def test_bios_with_gpus_is_refused(esxi):
    esxi["vms"][0]["firmware"]["type"] = "bios"
    assert "use efi" in refused(esxi)["vms[0].firmware.type"]


def test_secure_boot_with_gpus_is_refused(esxi):
    esxi["vms"][0]["firmware"]["secureBoot"] = True
    assert "allowSecureBootWithGpus" in refused(esxi)["vms[0].firmware.secureBoot"]


def test_secure_boot_with_gpus_when_allowed_reaches_the_vm(esxi):
    esxi["vms"][0]["firmware"].update(secureBoot=True, allowSecureBootWithGpus=True)
    assert machine(run(esxi)).inputs["efiSecureBootEnabled"] is True


def test_bios_without_gpus_is_accepted(esxi):
    esxi["vms"][0]["firmware"]["type"] = "bios"
    esxi["vms"][0]["gpus"] = []
    assert machine(run(esxi)).inputs["firmware"] == "bios"


def test_bios_or_secure_boot_on_libvirt_points_to_the_host_firmware(dev):
    from tests.test_config import problems
    dev["vms"][0]["firmware"] = {"type": "bios", "secureBoot": True}
    found = problems(dev)
    assert "OVMF" in found["vms[0].firmware.type"] and "hosts[].firmware.code" in found["vms[0].firmware.secureBoot"]


def test_mmio_size_smaller_than_the_bars_is_refused(esxi):
    esxi["vms"][0]["mmioHole64Gib"] = 16
    assert "at least 32 GiB" in refused(esxi)["vms[0].mmioHole64Gib"]


@pytest.mark.parametrize("mac", ["52:54:00:11:22:33", "00:50:56:40:00:01"])
def test_mac_outside_vmwares_static_range_is_refused(esxi, mac):
    esxi["vms"][0]["network"]["mac"] = mac
    assert "00:50:56:00:00:00-00:50:56:3f:ff:ff" in refused(esxi)["vms[0].network.mac"]


@pytest.mark.parametrize("missing", ["vsphereUser", "vspherePassword"])
def test_vsphere_host_without_credentials_is_refused(esxi, missing):
    secrets = {k: v for k, v in SECRETS.items() if k != missing}
    assert "--secret gpu-stack:" + missing in refused(esxi, secrets=secrets)[missing]


def test_device_not_found_by_get_host_pci_device_is_refused(esxi):
    problems = refused(esxi, vsphere_pci={ESXI: [vsphere_pci_device("0000:82:00.0", "T4")]})
    message = problems["vms[0].gpus[0].address"]
    assert "0000:03:00.0" in message and "Toggle passthrough to Active" in message


def test_device_at_another_address_is_refused(esxi):
    problems = refused(esxi, vsphere_pci={ESXI: [vsphere_pci_device("0000:04:00.0", "P100-PCIE-16GB")]})
    assert "at 0000:04:00.0" in problems["vms[0].gpus[0].address"]


def test_device_not_enabled_for_passthrough_on_the_host_is_refused(esxi):
    esxi["hosts"][0]["vsphere"]["pciDevices"] = ["0000:82:00.0"]
    message = refused(esxi)["vms[0].gpus[0].address"]
    assert "hosts[0].vsphere.pciDevices" in message and "Toggle passthrough" in message


def test_inventory_object_not_found_is_refused(esxi):
    assert "datastore 'datastore1' not found" in refused(esxi, vsphere_missing={"datastore1"})["hosts[0].vsphere.datastore"]


def test_vsphere_host_needs_its_block_and_no_libvirt_keys(esxi):
    esxi["hosts"][0]["libvirtUri"] = "qemu:///system"
    del esxi["hosts"][0]["vsphere"]
    problems = refused(esxi)
    assert "not used by kind vsphere" in problems["hosts[0].libvirtUri"]
    assert "required for kind vsphere" in problems["hosts[0].vsphere"]


def test_template_needs_exactly_one_source(esxi):
    esxi["hosts"][0]["vsphere"]["template"] = {"vm": "t", "ovf": "http://x/y.ova"}
    assert "exactly one" in refused(esxi)["hosts[0].vsphere.template"]


# --- one stack, both kinds ------------------------------------------------------


def test_a_stack_mixes_libvirt_and_vsphere_hosts(dev, esxi):
    raw = copy.deepcopy(dev)
    vs_host = esxi["hosts"][0]
    raw["hosts"] = [*dev["hosts"], vs_host]
    vs_vm = {k: v for k, v in esxi["vms"][0].items() if k != "kvmHidden"}
    vs_vm["gpus"] = [{"address": "0000:03:00.0", "model": "L40S", "numaNode": 0}]
    raw["vms"] = [*dev["vms"], vs_vm]
    result = run(raw, preview=False)
    assert [r.name for r in result.of_type("gpu-stack:index:GpuPassthroughVm")] == ["gpu-dev-0", "k8s-gpu-alma"]
    domain, vm = result.named("gpu-dev-0-domain"), machine(result)
    assert domain.provider == "libvirt-lab-gpu-1" and vm.provider == "vsphere-esxi-r730"
    # one MMIO derivation: the same GPU gets the same window on both backends
    hole = re.search(r"pci-hole64-size=(\d+)G", domain.inputs["xml"]["xslt"]).group(1)
    assert extra_config(vm.inputs)["pciPassthru.64bitMMIOSizeGB"] == hole == "128"
    # both VMs are bootstrapped; the vSphere VM joins the libvirt VM's control plane
    assert {r.name for r in result.of_type("gpu-stack:index:GpuGuestBootstrap")} == {"gpu-dev-0-guest", "k8s-gpu-alma-guest"}
    join = result.named("k8s-gpu-alma-guest-kubernetes").inputs["create"]
    assert "GS_K8S_ROLE='join'" in join or "GS_K8S_ROLE=join" in join
    assert result.named("gpu-dev-0-domain").inputs["networkInterfaces"][0]["mac"].startswith("52:54:00:")


def test_without_a_known_address_the_guest_is_reached_at_the_vms_reported_ip(esxi):
    del esxi["vms"][0]["network"]["address"]
    result = run(esxi, preview=False)
    assert "waitForGuestNetTimeout" not in machine(result).inputs  # the provider waits for VMware Tools to report it
    ip = result.outputs["vms"]["k8s-gpu-alma"]["ip"]
    assert ip.startswith("192.168.122.")  # the mock's defaultIpAddress
    assert result.named("k8s-gpu-alma-guest-wait-ssh").inputs["connection"]["value"]["host"] == ip


def test_cores_per_socket_must_divide_the_vcpus(esxi):
    esxi["vms"][0]["vsphere"] = {"numCoresPerSocket": 6}
    assert "does not divide vcpus 16" in refused(esxi)["vms[0].vsphere.numCoresPerSocket"]


def test_guestinfo_user_data_passes_cloud_inits_own_schema(esxi, tmp_path):
    import subprocess

    from tests.conftest import require_tool

    tool = require_tool("cloud-init")
    extra = extra_config(machine(run(esxi, preview=False)).inputs)
    path = tmp_path / "user-data"
    path.write_bytes(base64.b64decode(extra["guestinfo.userdata"]))
    proc = subprocess.run([tool, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout, proc.stdout + proc.stderr


def test_a_libvirt_host_still_needs_its_uri_and_base_image(dev):
    from tests.test_config import problems
    del dev["hosts"][0]["libvirtUri"], dev["hosts"][0]["baseImage"]
    found = problems(dev)
    assert "required for kind libvirt" in found["hosts[0].libvirtUri"] and "required for kind libvirt" in found["hosts[0].baseImage"]
