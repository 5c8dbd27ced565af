"""Pure renderers of the VM: MMIO sizing, NUMA placement, affinity grouping, cloud-init."""

from __future__ import annotations

import yaml

from render.cloud_init import render_meta_data, render_user_data
from hypervisors.libvirt.domain_xslt import AffinityGroup, DomainSpec, render_domain_xslt
from render.mmio import device_bar_bytes, phys_bits_needed, required_hole64_gib
from render.numa import Cell, Placement, affinity_groups, place_host
from config.models import Gpu, Host, NvSwitch, Vm
from stacks.load import parse_stack_config
from tests.conftest import seed000_host, seed000_vm
from tests.test_config import problems


def vm(**kw) -> Vm:
    return Vm(name="v", host="h", vcpus=4, memory_gib=16, **kw)


def test_seed000_needs_a_2048g_hole():
    gpus = [Gpu(address=f"0000:{b:02x}:00.0", model="H800-SXM5-80GB") for b in range(0x10, 0x18)]
    switches = [NvSwitch(address=f"0000:{b:02x}:00.0") for b in range(0x05, 0x09)]
    assert required_hole64_gib(vm(gpus=gpus, nvswitches=switches)) == 2048


def test_seed001_p100_needs_32g_like_its_64bitmmiosizegb():
    assert required_hole64_gib(vm(gpus=[Gpu(address="0000:03:00.0", model="P100-PCIE-16GB")])) == 32


def test_bar_override_changes_the_hole():
    base = vm(gpus=[Gpu(address="0000:03:00.0", model="L40S")])
    bigger = vm(gpus=[Gpu(address="0000:03:00.0", model="L40S", bar1_gib=256)])
    assert device_bar_bytes(bigger) > device_bar_bytes(base)
    assert (required_hole64_gib(base), required_hole64_gib(bigger)) == (128, 512)


def test_no_devices_no_hole():
    assert required_hole64_gib(vm()) == 0


def test_phys_bits_cover_ram_plus_hole_above_one_tib():
    # 1 TiB relocation + 256 GiB + 2048 GiB = 3.25 TiB -> 42 bits (QEMU refused 40 in VALIDATORS.md)
    assert phys_bits_needed(256, 2048) == 42
    assert phys_bits_needed(16, 32) == 41


def test_placement_splits_across_gpu_nodes_and_pins_within_them():
    raw = {"hosts": [seed000_host()], "vms": [seed000_vm()], "guest": {
        "os": {"family": "ubuntu", "version": "22.04"}, "sshPublicKey": "ssh-ed25519 AAAA t", "nvidia": {"driverVersion": "570.172.08"}}}
    _, placements = parse_stack_config(raw, {"sshPrivateKey"})
    cells = placements["ubuntu-gpu"].cells
    host = Host.model_validate(seed000_host())
    for cell in cells:
        node = next(n for n in host.numa_nodes if n.id == cell.host_node)
        assert set(cell.host_cpus) <= set(node.cpu_ids)
        assert not set(cell.host_cpus) & set(host.reserved_cpu_ids)
    assert [len(c.vcpus) for c in cells] == [32, 32]
    assert cells[1].vcpus[0] == 32


def test_two_vms_on_one_host_get_disjoint_cpus():
    host = Host.model_validate(seed000_host())
    a = Vm.model_validate({"name": "a", "host": "hgx-1", "vcpus": 8, "memoryGib": 32, "numa": {"hostNodes": [0]}})
    b = Vm.model_validate({"name": "b", "host": "hgx-1", "vcpus": 8, "memoryGib": 32, "numa": {"hostNodes": [0]}})
    placed, issues = place_host(0, host, [(0, a), (1, b)])
    assert not issues
    assert not set(placed["a"].cells[0].host_cpus) & set(placed["b"].cells[0].host_cpus)


def test_uneven_split_still_sums_exactly():
    host = Host.model_validate(seed000_host())
    v = Vm.model_validate({"name": "a", "host": "hgx-1", "vcpus": 9, "memoryGib": 33, "numa": {"hostNodes": [0, 1]}})
    placed, _ = place_host(0, host, [(0, v)])
    cells = placed["a"].cells
    assert sum(len(c.vcpus) for c in cells) == 9
    assert sum(c.memory_mib for c in cells) == 33 * 1024


def test_affinity_keeps_a_gpus_functions_on_one_port():
    groups = affinity_groups({"0000:3b:00.0": 0, "0000:86:00.0": 1}, ("0000:3b:00.0", "0000:86:00.0", "0000:3b:00.1"))
    assert groups == ((0, (("0000:3b:00.0", "0000:3b:00.1"),)), (1, (("0000:86:00.0",),)))
    placement = Placement((Cell(0, 0, (0,), (1,), 1024), Cell(1, 1, (1,), (2,), 1024)))
    xslt = render_domain_xslt(DomainSpec(("0000:3b:00.0", "0000:86:00.0", "0000:3b:00.1"), placement, 256, "",
                                         affinity=tuple(AffinityGroup(c, d) for c, d in groups)))
    assert 'slot="0x00" function="0x0" multifunction="on"/>' in xslt
    assert xslt.count('model="pcie-expander-bus"') == 2


def test_affinity_needs_a_cell_on_the_devices_node():
    raw = {"hosts": [seed000_host()], "vms": [seed000_vm()]}
    raw["vms"][0]["numa"] = {"exposeGpuAffinity": True, "hostNodes": [0]}
    raw["vms"][0]["vcpus"] = 32
    assert "needs a guest cell on host node 1" in problems(raw)["vms[0].gpus[4].numaNode"]


def test_cloud_init_user_data_is_cloud_config_with_pinned_host_key():
    text = render_user_data(hostname="gpu-0", user="ubuntu", ssh_public_key="ssh-ed25519 AAAA user",
                            host_key_private="-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
                            host_key_public="ssh-ed25519 BBBB")
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["ssh_keys"]["ed25519_public"] == "ssh-ed25519 BBBB"
    assert doc["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA user"]
    assert yaml.safe_load(render_meta_data(hostname="gpu-0"))["instance-id"] == "gpu-0"


def test_registered_user_data_passes_cloud_inits_own_schema(dev, tmp_path):
    import subprocess

    from tests.conftest import require_tool, run_stack

    tool = require_tool("cloud-init")
    user_data = run_stack(dev, preview=False).named("gpu-dev-0-cloudinit").inputs["userData"]["value"]
    path = tmp_path / "user-data"
    path.write_text(user_data)
    proc = subprocess.run([tool, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout, proc.stdout + proc.stderr
    assert "DEPRECATED" not in proc.stdout + proc.stderr
