"""IOMMU preflight through the real program, with host node devices served by the mock provider."""

from __future__ import annotations

import threading
import time

import pytest

from render.iommu import nodedev_name, parse_node_device
from config.errors import ConfigError
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


# --- the preflight in one round: every look-up issued at once, all done before any VM, volume or command -----------

NODE_DEVICE_INFO = "libvirt:index/getNodeDeviceInfo:getNodeDeviceInfo"


def _three_hosts(dev) -> tuple[dict, dict]:
    """Three hosts with one VM each; every GPU has an audio function in its group (read in the second round)."""
    host, vm = dev["hosts"][0], dev["vms"][0]
    dev["hosts"] = [dict(host, name=f"lab-gpu-{i}", libvirtUri=f"qemu+ssh://root@lab-gpu-{i}/system") for i in range(3)]
    dev["vms"] = []
    devices: dict = {}
    for i in range(3):
        gpus = []
        for bus in ("3b", "3c"):
            gpu, audio = f"0000:{bus}:00.0", f"0000:{bus}:00.1"
            gpus.append({"address": gpu, "model": "L40S", "numaNode": 0})
            devices.update([nodedev(gpu, GPU_CLASS, int(bus, 16), [gpu, audio]),
                            nodedev(audio, AUDIO_CLASS, int(bus, 16), [gpu, audio], product="AD102 HD Audio")])
        dev["vms"].append(dict(vm, name=f"gpu-dev-{i}", host=f"lab-gpu-{i}", gpus=gpus))
    return dev, devices


class _Recorder:
    """Wraps the mock provider's call(): each look-up sleeps a little, and the order of events is kept."""

    def __init__(self, monkeypatch, seconds: float = 0.02):
        from tools import mockrun

        self.events: list[tuple[str, str]] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        original = mockrun.StackMocks.call
        recorder = self

        def call(mocks, args):
            if args.token != NODE_DEVICE_INFO:
                return original(mocks, args)
            with recorder.lock:
                recorder.in_flight += 1
                recorder.most_in_flight = max(recorder.most_in_flight, recorder.in_flight)
            time.sleep(seconds)
            try:
                return original(mocks, args)
            finally:
                with recorder.lock:
                    recorder.in_flight -= 1
                    recorder.events.append(("invoked", args.args["name"]))

        monkeypatch.setattr(mockrun.StackMocks, "call", call)

    def registered(self, type_: str, name: str) -> None:
        with self.lock:
            self.events.append(("registered", type_))


def test_concurrent_preflight_finishes_before_anything_but_the_providers_is_registered(dev, monkeypatch):
    cfg, devices = _three_hosts(dev)
    rec = _Recorder(monkeypatch)
    result = run_stack(cfg, node_devices=devices, on_register=rec.registered)
    invoked = [i for i, (what, _) in enumerate(rec.events) if what == "invoked"]
    others = [i for i, (what, t) in enumerate(rec.events) if what == "registered" and t != "pulumi:providers:libvirt"]
    assert len(invoked) == 12  # 3 hosts x (2 GPUs in the first round + 2 audio functions in the second)
    assert others and max(invoked) < min(others)
    providers = [i for i, (what, t) in enumerate(rec.events) if t == "pulumi:providers:libvirt"]
    assert len(providers) == 3 and max(providers) < min(others)
    # the second round's members were attached: the look-ups' results reached the VMs
    xslt = result.named("gpu-dev-2-domain").inputs["xml"]["xslt"]
    assert 'bus="0x3c" slot="0x00" function="0x1"' in xslt


def test_preflight_look_ups_overlap(dev, monkeypatch):
    cfg, devices = _three_hosts(dev)
    rec = _Recorder(monkeypatch)
    run_stack(cfg, node_devices=devices)
    # six GPUs in the first round, six audio functions in the second: each round is issued at once
    assert rec.most_in_flight == 6


def test_preflight_overlap_is_bounded(dev, monkeypatch):
    import hypervisors.libvirt.preflight as preflight

    cfg, devices = _three_hosts(dev)
    monkeypatch.setattr(preflight, "PREFLIGHT_CONCURRENCY", 2)
    rec = _Recorder(monkeypatch)
    run_stack(cfg, node_devices=devices)
    assert rec.most_in_flight == 2


def test_preflight_overlap_is_bounded_per_host(dev, monkeypatch):
    """One hypervisor gets at most PREFLIGHT_PER_HOST look-ups at once; the hosts still overlap each other."""
    import hypervisors.libvirt.preflight as preflight

    cfg, devices = _three_hosts(dev)
    monkeypatch.setattr(preflight, "PREFLIGHT_PER_HOST", 1)
    rec = _Recorder(monkeypatch)
    run_stack(cfg, node_devices=devices)
    assert rec.most_in_flight == 3  # three hosts, one look-up each at a time


def test_concurrent_preflight_refusal_registers_only_providers(dev, monkeypatch):
    cfg, devices = _three_hosts(dev)
    # on every host the GPUs share a group with a third GPU no VM is given (seed 002), read in the second round;
    # the mock serves devices by name, whatever the host
    a, b, c = "0000:3b:00.0", "0000:3c:00.0", "0000:3d:00.0"
    shared = dict(nodedev(x, GPU_CLASS, 30, [a, b, c]) for x in (a, b, c))
    rec = _Recorder(monkeypatch)
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run_stack(cfg, node_devices={**devices, **shared}, on_register=lambda t, n: registered.append(t))
    assert {i.path for i in info.value.issues} == {"vms[0].gpus[0].address", "vms[0].gpus[1].address",
                                                   "vms[1].gpus[0].address", "vms[1].gpus[1].address",
                                                   "vms[2].gpus[0].address", "vms[2].gpus[1].address"}
    assert all("IOMMU group 30" in i.message and c in i.message for i in info.value.issues)
    assert set(registered) == {"pulumi:providers:libvirt"}
    assert len([e for e in rec.events if e[0] == "invoked"]) == 9


def test_concurrent_preflight_look_up_failure_registers_only_providers(dev, monkeypatch):
    cfg, devices = _three_hosts(dev)
    del devices[nodedev_name("0000:3c:00.0")]
    _Recorder(monkeypatch)
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run_stack(cfg, node_devices=devices, on_register=lambda t, n: registered.append(t))
    assert info.value.issues and all(i.path.endswith(".address") and "pci_0000_3c_00_0" in i.message for i in info.value.issues)
    assert set(registered) == {"pulumi:providers:libvirt"}


def test_smt_look_ups_are_one_round_and_warn_per_host(dev, monkeypatch):
    """getNodeInfo (threads per core, for the SMT warning) of every host is issued at once too, not one per host."""
    import pulumi
    from tools import mockrun

    cfg, devices = _three_hosts(dev)
    original = mockrun.StackMocks.call
    lock, state = threading.Lock(), {"in": 0, "most": 0, "calls": 0}

    def call(mocks, args):
        if args.token != "libvirt:index/getNodeInfo:getNodeInfo":
            return original(mocks, args)
        with lock:
            state["in"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["in"])
        time.sleep(0.05)
        with lock:
            state["in"] -= 1
        return {"cpuModel": "x86_64", "cpuSockets": 2, "cpuCoresPerSocket": 48, "cpuCoresTotal": 192, "cpuThreadsPerCore": 2,
                "memoryTotalKb": 2 * 1024 ** 3, "numaNodes": 2}

    monkeypatch.setattr(mockrun.StackMocks, "call", call)
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warned.append(message))
    run_stack(cfg, node_devices=devices)
    hosts = [h["name"] for h in cfg["hosts"] if not h.get("threadSiblings")]
    assert state["calls"] == len(hosts) >= 3 and state["most"] == len(hosts)
    smt = [m for m in warned if "threads per core" in m]
    assert [m.split(":", 2)[1] for m in smt] == [f"hosts[{i}].threadSiblings" for i, h in enumerate(cfg["hosts"]) if h["name"] in hosts]
    assert all("reports 2 threads per core" in m for m in smt)


def test_a_device_the_hypervisor_does_not_have_is_refused_by_key(dev):
    """The real provider answers a missing PCI address with libvirt's "Node device not found" (seen with
    pulumi-libvirt 0.5.4 and libvirtd 9.0.0 in a real `pulumi preview`, which ended in a traceback)."""
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run_stack(dev, node_devices={}, on_register=lambda t, n: registered.append(t))
    [issue] = info.value.issues
    assert issue.path == "vms[0].gpus[0].address"
    assert "is not a PCI device of host lab-gpu-1" in issue.message and "pci_0000_3b_00_0" in issue.message
    assert set(registered) == {"pulumi:providers:libvirt"}


def test_a_host_the_provider_cannot_reach_is_one_line_at_its_uri():
    from hypervisors.libvirt.preflight import LookupFailed, _lookup_issues
    from stacks.load import parse_stack_config
    from tests.conftest import stack_file

    cfg, _ = parse_stack_config(stack_file("dev"), {"sshPrivateKey", "grafanaAdminPassword"})
    vm = cfg.vms[0]
    failed = {(vm.host, d.address): LookupFailed("failed to connect: ssh: handshake failed: knownhosts: key mismatch") for d in vm.gpus}
    [issue] = _lookup_issues(cfg, failed)
    assert issue.path == "hosts[0].libvirtUri"
    assert "could not ask host lab-gpu-1: failed to connect: ssh: handshake failed: knownhosts: key mismatch" in issue.message
