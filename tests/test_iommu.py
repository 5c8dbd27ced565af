"""IOMMU preflight through the real program, with host node devices served by the mock provider."""

from __future__ import annotations

import pytest

from render.iommu import nodedev_name, parse_node_device
from stacks.errors import ConfigError
from tests.conftest import run_stack

GPU_CLASS, AUDIO_CLASS, BRIDGE_CLASS, NIC_CLASS = "0x030200", "0x040300", "0x060400", "0x020000"


def nodedev(address: str, cls: str, group: int, members: list[str], vendor: str = "0x10de", numa: int | None = 0, product: str = "GH100 [H800 SXM5 80GB]") -> tuple[str, dict]:
    """getNodeDeviceInfo's result as the provider returns it (wire names)."""
    def addr(a):
        d, b, sf = a.split(":")
        s, f = sf.split(".")
        return {"domain": f"0x{d}", "bus": f"0x{b}", "slot": f"0x{s}", "function": f"0x{f}"}
    numa_xml = f"<numa node='{numa}'/>" if numa is not None else ""
    return nodedev_name(address), {
        "name": nodedev_name(address),
        "xml": f"<device><name>{nodedev_name(address)}</name><capability type='pci'><class>{cls}</class>{numa_xml}</capability></device>",
        "capability": {
            "type": "pci", "class": cls,
            "vendor": {"id": vendor, "name": "NVIDIA Corporation" if vendor == "0x10de" else "Other"},
            "product": {"id": "0x2324", "name": product},
            "iommuGroup": {"number": str(group), "addresses": [addr(m) for m in members]},
        },
    }


def test_parse_node_device_reads_group_class_and_numa():
    _, raw = nodedev("0000:3b:00.0", GPU_CLASS, 41, ["0000:3b:00.0", "0000:3b:00.1"], numa=1)
    cap = {"class_": raw["capability"]["class"], "vendor": raw["capability"]["vendor"], "product": raw["capability"]["product"],
           "iommu_group": raw["capability"]["iommuGroup"]}
    dev = parse_node_device("0000:3b:00.0", cap, raw["xml"])
    assert (dev.iommu_group, dev.class_code, dev.vendor_id, dev.numa_node) == (41, 0x030200, 0x10DE, 1)
    assert dev.group_members == ("0000:3b:00.0", "0000:3b:00.1")


def test_gpu_audio_function_is_attached_too(dev):
    gpu, audio = "0000:3b:00.0", "0000:3b:00.1"
    devices = dict([nodedev(gpu, GPU_CLASS, 41, [gpu, audio]), nodedev(audio, AUDIO_CLASS, 41, [gpu, audio], product="AD102 HD Audio")])
    xslt = run_stack(dev, node_devices=devices).named("gpu-dev-0-domain").inputs["xml"]["xslt"]
    assert 'bus="0x3b" slot="0x00" function="0x0"' in xslt
    assert 'bus="0x3b" slot="0x00" function="0x1"' in xslt


def test_pci_bridge_in_the_group_is_not_attached(dev):
    gpu, bridge = "0000:3b:00.0", "0000:3a:00.0"
    devices = dict([nodedev(gpu, GPU_CLASS, 7, [bridge, gpu]), nodedev(bridge, BRIDGE_CLASS, 7, [bridge, gpu], product="PCIe switch")])
    xslt = run_stack(dev, node_devices=devices).named("gpu-dev-0-domain").inputs["xml"]["xslt"]
    assert xslt.count("<hostdev ") == 1
    assert 'bus="0x3a"' not in xslt


def test_seed002_two_gpus_in_one_group_is_refused(dev):
    """Seed 002: six GPUs visible, four assignable: two groups held two GPUs each."""
    mine, neighbour = "0000:3b:00.0", "0000:3c:00.0"
    devices = dict([nodedev(mine, GPU_CLASS, 30, [mine, neighbour]), nodedev(neighbour, GPU_CLASS, 30, [mine, neighbour])])
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run_stack(dev, node_devices=devices, on_register=lambda t, n: registered.append(t))
    issue = info.value.issues[0]
    assert issue.path == "vms[0].gpus[0].address"
    assert "IOMMU group 30" in issue.message and neighbour in issue.message
    # only the providers the preflight reads through were registered; no volume, no domain
    assert set(registered) == {"pulumi:providers:libvirt"}


def test_group_shared_with_another_vms_gpu_names_the_owner(dev):
    a, b = "0000:3b:00.0", "0000:3b:00.1"
    dev["vms"].append(dict(dev["vms"][0], name="gpu-dev-1", vcpus=4, memoryGib=16, gpus=[{"address": b, "model": "L40S", "numaNode": 0}]))
    devices = dict([nodedev(a, GPU_CLASS, 5, [a, b]), nodedev(b, GPU_CLASS, 5, [a, b])])
    with pytest.raises(ConfigError) as info:
        run_stack(dev, node_devices=devices)
    messages = {i.path: i.message for i in info.value.issues}
    assert "assigned to vms[1] (gpu-dev-1)" in messages["vms[0].gpus[0].address"]
    assert "assigned to vms[0] (gpu-dev-0)" in messages["vms[1].gpus[0].address"]


def test_unrelated_device_in_group_is_refused(dev):
    gpu, nic = "0000:3b:00.0", "0000:3d:00.0"
    devices = dict([nodedev(gpu, GPU_CLASS, 9, [gpu, nic]), nodedev(nic, NIC_CLASS, 9, [gpu, nic], vendor="0x15b3", product="ConnectX-7")])
    with pytest.raises(ConfigError, match="also holds 0000:3d:00.0 \\(ConnectX-7\\)"):
        run_stack(dev, node_devices=devices)


def test_address_of_a_non_nvidia_device_is_refused(dev):
    nic = "0000:3b:00.0"
    devices = dict([nodedev(nic, NIC_CLASS, 9, [nic], vendor="0x8086", product="Ethernet E810")])
    with pytest.raises(ConfigError, match="vendor 0x8086 \\(Ethernet E810\\), not NVIDIA"):
        run_stack(dev, node_devices=devices)


def test_declared_numa_node_must_match_the_host(dev):
    gpu = "0000:3b:00.0"
    devices = dict([nodedev(gpu, GPU_CLASS, 9, [gpu], numa=1)])
    with pytest.raises(ConfigError) as info:
        run_stack(dev, node_devices=devices)
    assert info.value.issues[0].path == "vms[0].gpus[0].numaNode"
