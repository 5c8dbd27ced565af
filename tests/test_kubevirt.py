"""The KubeVirt backend of GpuPassthroughVm (seed 002) under Pulumi's mock monitor, preview and update.

The VirtualMachine and the KubeVirt CR patch are validated against KubeVirt
v1.9.0's own CRD openAPIV3Schema (tests/reference/kubevirt-v1.9.0-*.openapi.yaml);
capacity is predicted from seed 002's node facts (hosts/kv-gpu-node-1.facts.json).
"""

from __future__ import annotations

import copy
import re
import subprocess

import jsonschema
import pytest
import yaml

from config.catalog import GIB
from hypervisors.kubevirt.render import hook_script
from render.mmio import required_hole64_gib
from config.models import Vm
from config.errors import ConfigError
from tests.conftest import DEFAULT_SECRETS, ROOT, require_reference, require_tool, run_stack, stack_file
from tools.mockrun import SECRET_SIG
from tools.plan import sanitize

KVM = "kubernetes:kubevirt.io/v1:VirtualMachine"
PATCH = "kubernetes:kubevirt.io/v1:KubeVirtPatch"
HOST_KUBECONFIG = "apiVersion: v1\nkind: Config\n# the HOST cluster\n"
SECRETS = {**DEFAULT_SECRETS, "kubevirtKubeconfig": HOST_KUBECONFIG}
FACTS = str(ROOT / "hosts" / "kv-gpu-node-1.facts.json")
ADVERTISED = ["0000:1b:00.0", "0000:3d:00.0", "0000:89:00.0", "0000:b1:00.0"]
SHARED = ["0000:1c:00.0", "0000:3e:00.0"]  # the second GPU of groups 30 and 31


@pytest.fixture
def kv() -> dict:
    return copy.deepcopy(stack_file("kubevirt"))


def run(raw: dict, **kw):
    kw.setdefault("secrets", SECRETS)
    return run_stack(raw, **kw)


def machine(result):
    [vm] = result.of_type(KVM)
    return vm


def domain(result) -> dict:
    return machine(result).inputs["spec"]["template"]["spec"]["domain"]


def unwrap(value):
    return value["value"] if isinstance(value, dict) and SECRET_SIG in value else value


def gpus(model: str, count: int) -> list[dict]:
    return [{"address": f"0000:{0x1b + 0x10 * i:02x}:00.0", "model": model, "numaNode": 0 if i < count / 2 or count == 1 else 1} for i in range(count)]


def schema(name: str) -> dict:
    return yaml.safe_load(require_reference(f"kubevirt-v1.9.0-{name}.openapi.yaml").read_text())["openAPIV3Schema"]


def unknown_fields(obj, sch: dict, path: str = "") -> list[str]:
    """Keys the structural schema does not declare: the API server would prune them silently
    (the CRDs set no additionalProperties: false, so jsonschema alone accepts them)."""
    if sch.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(obj, dict):
        props, extra = sch.get("properties"), sch.get("additionalProperties")
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            if props is not None and k in props:
                out += unknown_fields(v, props[k], p)
            elif isinstance(extra, dict):
                out += unknown_fields(v, extra, p)
            elif props is not None or extra is False:
                out.append(p)
    elif isinstance(obj, list) and isinstance(sch.get("items"), dict):
        for i, v in enumerate(obj):
            out += unknown_fields(v, sch["items"], f"{path}[{i}]")
    return out


# --- the VirtualMachine ----------------------------------------------------------


@pytest.mark.parametrize("preview", [True, False])
def test_seed002_vm_asks_for_four_gpus_by_resource_name_with_efi_and_no_secure_boot(kv, preview):
    result = run(kv, preview=preview, host_facts=[FACTS])
    d = domain(result)
    assert [g["deviceName"] for g in d["devices"]["gpus"]] == ["nvidia.com/RTX_3090"] * 4
    assert "hostDevices" not in d["devices"]
    assert d["firmware"]["bootloader"]["efi"] == {"secureBoot": False, "persistent": True}
    assert d["features"]["kvm"]["hidden"] is True, "GeForce: the catalog marks the RTX 3090 consumer"
    assert d["resources"]["requests"] == d["resources"]["limits"]
    assert d["resources"]["requests"]["memory"] == "131072Mi"
    assert machine(result).inputs["spec"]["runStrategy"] == "Always"
    assert machine(result).inputs["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "kv-gpu-node-1"}
    assert result.outputs["kubevirtExpectedAllocatable"] == {"kv-gpu-node-1": {"nvidia.com/RTX_3090": 4}}


@pytest.mark.parametrize("preview", [True, False])
def test_nvswitches_go_to_host_devices_by_resource_name(kv, preview):
    kv["vms"][0]["gpus"] = gpus("H100-SXM5-80GB", 8)
    kv["vms"][0]["nvswitches"] = [{"address": f"0000:0{5 + i}:00.0", "model": "NVSwitch-Gen3", "numaNode": 0} for i in range(4)]
    kv["hosts"][0]["kubevirt"]["devicePlugins"] = {"kubevirt": ["H100-SXM5-80GB", "NVSwitch-Gen3"]}
    d = domain(run(kv, preview=preview))
    assert [g["deviceName"] for g in d["devices"]["gpus"]] == ["nvidia.com/H100_SXM5_80GB"] * 8
    assert [h["deviceName"] for h in d["devices"]["hostDevices"]] == ["nvidia.com/NVSwitch_Gen3"] * 4
    assert "features" not in d, "data-centre GPUs do not need the hypervisor hidden"


@pytest.mark.parametrize("model,count,switches,size", [("RTX-3090", 1, 0, 2), ("A100-SXM4-80GB", 1, 0, 256), ("H100-SXM5-80GB", 8, 4, 2048)])
@pytest.mark.parametrize("preview", [True, False])
def test_mmio_size_is_derived_with_the_libvirt_sizing_code_and_carried_by_the_hook(kv, model, count, switches, size, preview):
    vm = kv["vms"][0]
    vm["gpus"] = gpus(model, count)
    vm["nvswitches"] = [{"address": f"0000:0{5 + i}:00.0", "model": "NVSwitch-Gen3", "numaNode": 0} for i in range(switches)]
    kv["hosts"][0]["kubevirt"]["devicePlugins"] = {}
    result = run(kv, preview=preview)
    assert required_hole64_gib(Vm.model_validate(vm)) == size
    [cm] = [r for r in result.of_type("kubernetes:core/v1:ConfigMap") if r.name == "kv-3090-pcihole64"]
    script = cm.inputs["data"]["pcihole64.sh"]
    assert f'<pcihole64 unit=\\"KiB\\">{size * GIB // 1024}</pcihole64>' in script
    hooks = yaml.safe_load(machine(result).inputs["spec"]["template"]["metadata"]["annotations"]["hooks.kubevirt.io/hookSidecars"])
    assert hooks == [{"args": ["--version", "v1alpha2"], "image": "quay.io/kubevirt/sidecar-shim:v1.9.0",
                      "configMap": {"name": "kv-3090-pcihole64", "key": "pcihole64.sh", "hookPath": "/usr/bin/onDefineDomain"}}]
    assert "kv-3090-pcihole64" in [d for d in machine(result).depends_on] or any("pcihole64" in d for d in machine(result).depends_on)


def test_no_devices_no_hook(kv):
    kv["vms"][0]["gpus"] = []
    result = run(kv)
    assert "annotations" not in machine(result).inputs["spec"]["template"]["metadata"]
    assert not [r for r in result.of_type("kubernetes:core/v1:ConfigMap") if r.name.endswith("pcihole64")]


@pytest.mark.parametrize("xml,expect", [
    ('<domain><devices><disk></disk></devices></domain>',
     '<domain><devices><disk></disk><controller type="pci" index="0" model="pcie-root"><pcihole64 unit="KiB">4194304</pcihole64></controller></devices></domain>'),
    ('<domain><devices><controller type="pci" index="0" model="pcie-root"></controller></devices></domain>',
     '<domain><devices><controller type="pci" index="0" model="pcie-root"><pcihole64 unit="KiB">4194304</pcihole64></controller></devices></domain>'),
    ('<domain><devices><controller type="pci" index="0" model="pcie-root"><pcihole64 unit="KiB">0</pcihole64></controller></devices></domain>',
     '<domain><devices><controller type="pci" index="0" model="pcie-root"><pcihole64 unit="KiB">0</pcihole64></controller></devices></domain>'),
])
def test_hook_script_sets_pcihole64_on_the_root_controller(tmp_path, xml, expect):
    script = tmp_path / "onDefineDomain"
    script.write_text(hook_script(4))
    out = subprocess.run(["sh", str(script), "--vmi", "{}", "--domain", xml], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expect


def test_hook_script_is_shellcheck_clean():
    subprocess.run([require_tool("shellcheck"), str(ROOT / "scripts" / "kubevirt" / "pcihole64-hook.sh")], check=True)


def test_dedicated_cpus_numa_and_hugepages_when_asked(kv):
    d = domain(run(kv))
    assert d["cpu"]["dedicatedCpuPlacement"] is True and d["cpu"]["isolateEmulatorThread"] is True
    assert d["cpu"]["numa"] == {"guestMappingPassthrough": {}}
    assert d["memory"]["hugepages"] == {"pageSize": "1Gi"}
    assert d["resources"]["requests"]["cpu"] == d["resources"]["limits"]["cpu"] == "32"
    kv["vms"][0]["kubevirt"] = {"runStrategy": "Manual"}
    kv["vms"][0]["numa"] = {}
    d2 = domain(run(kv))
    assert "dedicatedCpuPlacement" not in d2["cpu"] and "numa" not in d2["cpu"] and "hugepages" not in d2["memory"]


@pytest.mark.parametrize("preview", [True, False])
def test_cloud_init_secret_holds_the_user_data_with_the_pinned_host_key(kv, preview):
    result = run(kv, preview=preview)
    [secret] = [r for r in result.of_type("kubernetes:core/v1:Secret") if r.name == "kv-3090-cloudinit"]
    assert machine(result).inputs["spec"]["template"]["spec"]["volumes"][1] == {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": "kv-3090-cloudinit"}}}
    assert secret.provider == "kubevirt-host-cluster"
    data = unwrap(secret.inputs["stringData"])
    if preview:
        assert type(data).__name__ == "Unknown" or sanitize(secret.inputs["stringData"]) == "[secret]", "unknown until the host key exists"
        return
    user_data = unwrap(data["userdata"])
    assert user_data.startswith("#cloud-config")
    [key] = [r for r in result.of_type("tls:index/privateKey:PrivateKey")]
    assert re.search(r"ssh_keys:\s*\n\s*ed25519_private:", user_data) or "ed25519_private" in user_data
    assert "ssh-ed25519 AAAAmock" in user_data, "the host key Pulumi generated is the one cloud-init installs"


def test_mac_is_stable_across_runs_and_modes(kv):
    macs = {domain(run(kv, preview=p))["devices"]["interfaces"][0]["macAddress"] for p in (True, False, True)}
    assert len(macs) == 1 and next(iter(macs)).startswith("52:54:00:")


def test_production_protects_the_vm_and_its_data_volume(kv):
    vm = machine(run(kv))
    assert vm.protect is True and vm.retain_on_delete is True
    assert vm.inputs["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] == "kv-3090-root"
    kv["production"] = False
    vm = machine(run(kv))
    assert vm.protect is False and not vm.retain_on_delete


@pytest.mark.parametrize("preview", [True, False])
def test_host_cluster_provider_for_the_vm_never_the_guest_clusters(kv, preview):
    result = run(kv, preview=preview)
    providers = {r.name: r for r in result.of_type("pulumi:providers:kubernetes")}
    host = providers["kubevirt-host-cluster"]
    assert unwrap(host.inputs["kubeconfig"]) == HOST_KUBECONFIG
    for r in [machine(result), *result.of_type(PATCH), *result.children_of("kv-3090")]:
        if r.type.startswith("kubernetes:"):
            assert r.provider == "kubevirt-host-cluster", r.name
    guest = [r for r in result.resources if r.type == "kubernetes:helm.sh/v3:Release"]
    assert guest and all(r.provider != "kubevirt-host-cluster" for r in guest), "the add-ons go to the guest cluster"


def test_bootstrap_connects_through_the_node_port(kv):
    result = run(kv, preview=False)
    [wait] = [r for r in result.of_type("command:remote:Command") if r.name == "kv-3090-guest-wait-ssh"]
    conn = unwrap(wait.inputs["connection"])
    assert conn["host"] == "10.20.0.31" and int(conn["port"]) == 30122
    [svc] = [r for r in result.of_type("kubernetes:core/v1:Service") if r.name == "kv-3090-ssh"]
    assert svc.inputs["spec"]["type"] == "NodePort" and svc.inputs["spec"]["ports"][0]["nodePort"] == 30122
    labels = machine(result).inputs["spec"]["template"]["metadata"]["labels"]
    assert svc.inputs["spec"]["selector"].items() <= labels.items(), "the Service selects the VMI's pod"


def test_kubevirt_cr_patch_permits_the_devices_with_kubevirts_own_plugin(kv):
    [patch] = run(kv).of_type(PATCH)
    conf = patch.inputs["spec"]["configuration"]
    assert conf["permittedHostDevices"]["pciHostDevices"] == [
        {"pciVendorSelector": "10DE:2204", "resourceName": "nvidia.com/RTX_3090", "externalResourceProvider": False}]
    assert {"HostDevices", "Sidecar", "LiveMigration"} <= set(conf["developerConfiguration"]["featureGates"])
    kv["hosts"][0]["kubevirt"]["manageKubeVirtConfig"] = False
    assert not run(kv).of_type(PATCH)


def test_gpu_operator_advertised_models_are_external(kv):
    kv["hosts"][0]["kubevirt"]["devicePlugins"] = {"gpuOperator": ["RTX-3090"]}
    [patch] = run(kv, host_facts=[FACTS]).of_type(PATCH)
    assert patch.inputs["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"][0]["externalResourceProvider"] is True


@pytest.mark.parametrize("preview", [True, False])
def test_objects_validate_against_kubevirts_own_crd_schemas(kv, preview):
    kv["vms"][0]["gpus"] = gpus("H100-SXM5-80GB", 8)  # a whole HGX H100 board: the NVSwitches belong with its GPUs
    kv["vms"][0]["nvswitches"] = [{"address": f"0000:0{5 + i}:00.0", "model": "NVSwitch-Gen3", "numaNode": 0} for i in range(4)]
    kv["hosts"][0]["kubevirt"]["devicePlugins"] = {}
    result = run(kv, preview=preview)
    vm = sanitize(machine(result).inputs)
    jsonschema.validate(vm, schema("virtualmachine"))
    assert unknown_fields(vm, schema("virtualmachine")) == []
    [patch] = result.of_type(PATCH)
    jsonschema.validate(sanitize(patch.inputs), schema("kubevirt"))
    assert unknown_fields(sanitize(patch.inputs), schema("kubevirt")) == []
    bad = copy.deepcopy(vm)
    bad["spec"]["template"]["spec"]["domain"]["devices"]["gpus"][0].pop("name")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema("virtualmachine"))
    typo = copy.deepcopy(vm)
    typo["spec"]["template"]["spec"]["domain"]["firmware"]["bootloader"]["efi"]["secureboot"] = False
    assert unknown_fields(typo, schema("virtualmachine")) == ["spec.template.spec.domain.firmware.bootloader.efi.secureboot"]


@pytest.mark.parametrize("disk,volume", [
    ({"registry": "quay.io/containerdisks/ubuntu:24.04", "storageClass": "ceph-rbd"}, "dataVolume"),
    ({"containerDisk": "quay.io/containerdisks/ubuntu:24.04"}, "containerDisk"),
])
def test_other_root_disks_validate(kv, disk, volume):
    kv["hosts"][0]["kubevirt"]["rootDisk"] = disk
    vm = sanitize(machine(run(kv)).inputs)
    assert volume in vm["spec"]["template"]["spec"]["volumes"][0]
    assert ("dataVolumeTemplates" in vm["spec"]) == (volume == "dataVolume")
    jsonschema.validate(vm, schema("virtualmachine"))
    assert unknown_fields(vm, schema("virtualmachine")) == []


def test_without_facts_capacity_is_unchecked(kv):
    result = run(kv)
    assert "unchecked on kv-gpu-node-1" in result.outputs["kubevirtCapacity"]
    assert result.outputs["kubevirtExpectedAllocatable"] == {}


# --- refusals -----------------------------------------------------------------------


def refused(raw: dict, **kw) -> dict[str, str]:
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run(raw, on_register=lambda t, n: registered.append(t), **kw)
    assert KVM not in registered, "no VM is declared when a check fails"
    return {i.path: i.message for i in info.value.issues}


def test_five_of_seed002s_six_gpus_are_refused_against_the_facts(kv):
    kv["vms"][0]["gpus"].append({"address": SHARED[0], "model": "RTX-3090", "numaNode": 0})
    issues = refused(kv, host_facts=[FACTS])
    msg = issues["vms[0].gpus"]
    assert "node kv-gpu-node-1" in msg and "nvidia.com/RTX_3090" in msg and "advertise 4" in msg and "ask for 5" in msg
    assert "group 30: 0000:1b:00.0, 0000:1c:00.0" in msg and "group 31: 0000:3d:00.0, 0000:3e:00.0" in msg
    assert "ACS" in msg and "whole group" in msg


def test_two_vms_on_one_node_that_together_exceed_are_refused(kv):
    first = kv["vms"][0]
    first["gpus"] = first["gpus"][:2]
    second = copy.deepcopy(first) | {"name": "kv-3090-b"}
    second["gpus"] = [{"address": a, "model": "RTX-3090", "numaNode": 1} for a in ADVERTISED[2:]] + [{"address": SHARED[1], "model": "RTX-3090", "numaNode": 0}]
    second["vcpus"], second["memoryGib"] = 16, 64
    first["vcpus"], first["memoryGib"] = 16, 64
    kv["vms"].append(second)
    msg = refused(kv, host_facts=[FACTS])["vms[1].gpus"]
    assert "kv-3090 2 + kv-3090-b 3" in msg and "advertise 4" in msg


@pytest.mark.parametrize("path,value,key", [
    ("type", "bios", "vms[0].firmware.type"),
    ("secureBoot", True, "vms[0].firmware.secureBoot"),
])
def test_bios_or_secure_boot_with_gpus_is_refused(kv, path, value, key):
    kv["vms"][0]["firmware"][path] = value
    assert key in refused(kv)


def test_gpu_model_without_a_vendor_device_id_is_refused(kv):
    kv["vms"][0]["gpus"] = gpus("A800-SXM4-80GB", 1)
    kv["vms"][0]["kvmHidden"] = False
    kv["hosts"][0]["kubevirt"]["devicePlugins"] = {}
    assert "vendor:device ID" in refused(kv)["vms[0].gpus[0].model"]


def test_both_device_plugins_for_one_device_are_refused(kv):
    kv["hosts"][0]["kubevirt"]["devicePlugins"] = {"kubevirt": ["RTX-3090"], "gpuOperator": ["RTX-3090"]}
    assert "two device plugins" in refused(kv)["hosts[0].kubevirt.devicePlugins.gpuOperator[0]"]


def test_kubevirt_host_without_kubeconfig_is_refused(kv):
    issues = refused(kv, secrets=DEFAULT_SECRETS)
    assert "kubevirtKubeconfig" in issues and "host cluster" in issues["kubevirtKubeconfig"]


def test_multus_is_refused_by_name(kv):
    kv["hosts"][0]["kubevirt"]["ssh"] = {"via": "multus"}
    assert "not implemented" in refused(kv)["hosts[0].kubevirt.ssh.via"]


def test_kubevirt_host_needs_its_block(kv):
    del kv["hosts"][0]["kubevirt"]
    assert "hosts[0].kubevirt" in refused(kv)


def test_container_disk_with_a_storage_class_is_refused(kv):
    kv["hosts"][0]["kubevirt"]["rootDisk"] = {"containerDisk": "quay.io/containerdisks/ubuntu:24.04", "storageClass": "ceph-rbd"}
    assert "ephemeral" in refused(kv)["hosts[0].kubevirt.rootDisk.storageClass"]


def test_a_stack_may_mix_libvirt_and_kubevirt_hosts():
    raw = copy.deepcopy(stack_file("dev"))
    kv = stack_file("kubevirt")
    raw["hosts"].append(kv["hosts"][0])
    vm = copy.deepcopy(kv["vms"][0])
    vm["gpus"] = vm["gpus"][:1]
    raw["vms"].append(vm)
    result = run(raw, host_facts=[FACTS])
    [domain_] = result.of_type("libvirt:index/domain:Domain")
    assert domain_.provider.startswith("libvirt-") and machine(result).provider == "kubevirt-host-cluster"
    assert {c.name.split("-guest-")[0] for c in result.of_type("command:remote:Command") if "-guest-" in c.name} >= {"gpu-dev-0", "kv-3090"}


def test_load_balancer_ssh_uses_the_services_ingress_address(kv):
    kv["hosts"][0]["kubevirt"]["ssh"] = {"serviceType": "LoadBalancer"}

    def lb(args):
        if args.typ == "kubernetes:core/v1:Service" and args.name == "kv-3090-ssh":
            return {"status": {"loadBalancer": {"ingress": [{"ip": "10.20.0.200"}]}}}
        return {}

    result = run(kv, preview=False, outputs=lb)
    [wait] = [r for r in result.of_type("command:remote:Command") if r.name == "kv-3090-guest-wait-ssh"]
    conn = unwrap(wait.inputs["connection"])
    assert conn["host"] == "10.20.0.200" and int(conn["port"]) == 22
    [svc] = [r for r in result.of_type("kubernetes:core/v1:Service") if r.name == "kv-3090-ssh"]
    assert svc.inputs["spec"]["type"] == "LoadBalancer" and "nodePort" not in svc.inputs["spec"]["ports"][0]


def test_node_selector_binds_the_vm_to_a_pool(kv):
    h = kv["hosts"][0]["kubevirt"]
    del h["nodeName"]
    h["nodeSelector"] = {"gpu-stack.io/pool": "rtx3090"}
    result = run(kv, host_facts=[FACTS])
    assert machine(result).inputs["spec"]["template"]["spec"]["nodeSelector"] == {"gpu-stack.io/pool": "rtx3090"}
    assert result.outputs["kubevirtExpectedAllocatable"] == {"gpu-stack.io/pool=rtx3090": {"nvidia.com/RTX_3090": 4}}


def test_an_address_the_node_facts_do_not_have_is_refused(kv):
    kv["vms"][0]["gpus"][0]["address"] = "0000:d8:00.0"
    assert "not in host facts" in refused(kv, host_facts=[FACTS])["vms[0].gpus[0].address"]


def test_each_vm_on_a_host_gets_its_own_node_port(kv):
    second = copy.deepcopy(kv["vms"][0]) | {"name": "kv-cpu"}
    second["gpus"] = [{"address": SHARED[0], "model": "RTX-3090", "numaNode": 0}]
    kv["vms"].append(second)
    result = run(kv, preview=False)  # no facts: capacity unchecked
    ports = {r.name: r.inputs["spec"]["ports"][0]["nodePort"] for r in result.of_type("kubernetes:core/v1:Service") if r.name.endswith("-ssh")}
    assert ports == {"kv-3090-ssh": 30122, "kv-cpu-ssh": 30123}
    [wait] = [r for r in result.of_type("command:remote:Command") if r.name == "kv-cpu-guest-wait-ssh"]
    assert int(unwrap(wait.inputs["connection"])["port"]) == 30123
    kv["hosts"][0]["kubevirt"]["ssh"]["nodePort"] = 32767
    assert "at most 32767" in refused(kv)["hosts[0].kubevirt.ssh.nodePort"]


def test_every_guest_command_reaches_the_guest_through_its_node_port(kv):
    """Bootstrap and day-2 upgrade commands alike: port 22 on a node address is the node's own sshd, not the guest."""
    result = run(kv, preview=False)
    ports = {}
    for cmd in result.of_type("command:remote:Command"):
        conn = cmd.inputs["connection"]
        conn = conn.get("value", conn)  # a secret: the SDK wraps it
        ports[cmd.name] = (conn["host"], int(conn["port"]))
    upgrades = {n: p for n, p in ports.items() if "-upgrade-" in n or n.endswith(("-drain", "-uncordon"))}
    assert upgrades and {p for p in ports.values()} == {p for p in upgrades.values()}
    assert all(port != 22 for _, port in ports.values()), ports


def test_libvirts_default_network_is_no_concern_of_a_kubevirt_vm(kv):
    """192.168.122.0/24 is libvirt's; a KubeVirt VM's "default" network is the pod network of its host cluster."""
    kv["kubernetes"]["podCidr"] = "192.168.0.0/16"
    assert run(kv).of_type(KVM)


NAMESPACE = "kubernetes:core/v1:Namespace"
ON_HOST_CLUSTER = ("kubernetes:core/v1:Secret", "kubernetes:core/v1:ConfigMap", "kubernetes:core/v1:Service", KVM)


def host_namespaces(result) -> list:
    return [r for r in result.of_type(NAMESPACE) if r.provider == "kubevirt-host-cluster"]


@pytest.mark.parametrize("preview", [True, False])
def test_the_vms_namespace_is_created_on_the_host_cluster_before_its_objects(kv, preview):
    """Issue 22 item 5: nothing created gpu-vms, where the VM, its Secret, ConfigMap and Service live."""
    result = run(kv, preview=preview)
    [ns] = host_namespaces(result)
    assert ns.inputs["metadata"]["name"] == kv["hosts"][0]["kubevirt"]["namespace"] == "gpu-vms"
    objects = [r for r in result.resources if r.type in ON_HOST_CLUSTER and r.provider == "kubevirt-host-cluster"]
    assert {r.type for r in objects} == set(ON_HOST_CLUSTER)
    for r in objects:
        assert r.inputs["metadata"]["namespace"] == "gpu-vms" and ns.name in r.depends_on, r.name


def test_deleting_the_stack_keeps_the_namespace(kv):
    """Deleting a namespace deletes everything in it: protected in production like the VMs, and never deleted with
    the stack, since server-side apply adopts a namespace made by hand before gpu-stack created it."""
    [ns] = host_namespaces(run(kv))
    assert ns.protect is True and ns.retain_on_delete is True
    kv["production"] = False
    [ns] = host_namespaces(run(kv))
    assert ns.protect is False and ns.retain_on_delete is True


def test_vms_of_two_hosts_share_one_namespace(kv):
    second_host = copy.deepcopy(kv["hosts"][0])
    second_host["name"] = "kv-gpu-node-2"
    second_host["kubevirt"].update(nodeName="kv-gpu-node-2", ssh={**second_host["kubevirt"]["ssh"], "nodePort": 30200, "address": "10.20.0.32"})
    second_vm = copy.deepcopy(kv["vms"][0]) | {"name": "kv-3090-b", "host": "kv-gpu-node-2"}
    kv["hosts"].append(second_host)
    kv["vms"].append(second_vm)
    result = run(kv)
    [ns] = host_namespaces(result)
    assert {r.name for r in result.of_type(KVM) if ns.name in r.depends_on} == {"kv-3090-vm", "kv-3090-b-vm"}


def test_a_namespace_managed_elsewhere_is_not_created(kv):
    kv["hosts"][0]["kubevirt"]["createNamespace"] = False
    result = run(kv)
    assert host_namespaces(result) == []
    assert not [d for r in result.resources if r.type in ON_HOST_CLUSTER for d in r.depends_on if d.startswith("kubevirt-namespace")]


def test_host_cluster_core_objects_validate_against_the_kubernetes_schemas(kv):
    """The Namespace, cloud-init Secret, hook ConfigMap and SSH Service, as the host cluster's API server sees them
    (kubernetes-validate, strict: an unknown field fails), on the oldest and newest schemas it ships."""
    import kubernetes_validate

    result = run(kv, preview=False)  # in preview the user-data waits on the generated host key
    core = {"Namespace": NAMESPACE, "Secret": ON_HOST_CLUSTER[0], "ConfigMap": ON_HOST_CLUSTER[1], "Service": ON_HOST_CLUSTER[2]}
    def revealed(value):  # the secret's real shape (a map of strings), not the plan's "[secret]"
        value = unwrap(value)
        return {k: revealed(v) for k, v in value.items()} if isinstance(value, dict) else value

    objects = [{"apiVersion": "v1", "kind": kind, **sanitize(revealed(r.inputs))} for kind, typ in core.items()
               for r in result.of_type(typ) if r.provider == "kubevirt-host-cluster"]
    assert sorted(o["kind"] for o in objects) == sorted(core)
    versions = sorted({".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    for version in (versions[0], versions[-1]):
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**objects[0], "spec": {"finalizerz": []}}, versions[-1], strict=True)
