"""The catalog's BAR sizes, derived from the real `lspci` captures in tests/fixtures/lspci/ (PROVENANCE.md there).

Each test reads a capture with facts/host_facts.parse_lspci_regions and counts it the way
render/mmio.py does (catalog_bar_sizes: the largest 64-bit prefetchable BAR is BAR1, the other
64-bit BARs are added to it, 32-bit ones sit below 4 GiB), then compares with config/catalog.py.
"""

from __future__ import annotations

import copy

import pytest

from config.catalog import BAR_SIZE_REQUIRED, GPU_MODELS, NVSWITCH_MODELS
from facts.host_facts import load_host_facts, parse_lspci_regions
from tests.support.host_facts import catalog_bar_sizes
from doctor.nvidia_smi import parse_query
from render.mmio import device_bar_bytes
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import ROOT, stack_file

LSPCI = ROOT / "tests" / "fixtures" / "lspci"
B200 = LSPCI / "lspci-vvv-Region.1xB200-HGX.ubicloud-blog.txt"
A100 = LSPCI / "lspci-v+dmesg.8xA100-SXM4-80GB.qemu-guest-BAR-failure.txt"
HGX_H100_FACTS = ROOT / "tests" / "fixtures" / "host-facts" / "hgx-h100-shared.json"
NVIDIA_SMI = ROOT / "tests" / "fixtures" / "nvidia-smi"
SECRETS = {"sshPrivateKey", "grafanaAdminPassword", "joinToken", "registryPassword", "kubeconfig"}


def device_blocks(text: str) -> dict[str, str]:
    """`lspci -v` output split per device: the header line's address -> its indented lines."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line[:2].isalnum() and ":" in line[:8]:
            current = line.split()[0]
            blocks[current] = []
        elif current and line.startswith((" ", "\t")):
            blocks[current].append(line)
        elif not line.strip() or line.startswith("..."):
            current = None
    return {a: "\n".join(lines) for a, lines in blocks.items()}


def catalog_sizes(model: str) -> tuple[int, int]:
    m = GPU_MODELS[model]
    return m.bar1_bytes, m.other_64bit_bar_bytes


def test_b200_bars_come_from_the_hgx_b200_capture():
    bars = parse_lspci_regions(B200.read_text())
    assert [b.index for b in bars] == [0, 2, 4] and all(b.is_64bit and b.prefetchable for b in bars)
    assert catalog_sizes("B200-SXM-180GB") == catalog_bar_sizes(bars)


def a100_lspci() -> str:
    """The capture's `lspci -v` part (above the `----` line; the dmesg follows)."""
    return A100.read_text().split("\n----")[0]


def test_a100_bars_come_from_the_qemu_guest_capture():
    blocks = device_blocks(a100_lspci())
    assert len(blocks) == 3, blocks.keys()
    sizes = {catalog_bar_sizes(parse_lspci_regions(blocks[a])) for a in ("01:00.0", "02:00.0")}
    assert sizes == {catalog_sizes("A100-SXM4-80GB")}
    first = parse_lspci_regions(blocks["01:00.0"])
    assert [(b.index, b.is_64bit) for b in first] == [(0, False), (1, True), (3, True)]


def test_unassigned_bars_keep_their_index_and_carry_no_size():
    """The capture's 0c:00.0 got no 64-bit window (`Memory at <ignored>`): only its 32-bit BAR0 is read."""
    bars = parse_lspci_regions(device_blocks(a100_lspci())["0c:00.0"])
    assert [(b.index, b.is_64bit, b.prefetchable) for b in bars] == [(0, False, False)]
    assert catalog_bar_sizes(bars) == (0, 0)


def test_parts_without_a_capture_stay_required_from_the_config():
    assert BAR_SIZE_REQUIRED == {"B300-SXM-288GB", "NVSwitch-Gen4"}
    assert GPU_MODELS["B300-SXM-288GB"].bar1_bytes == 0 and NVSWITCH_MODELS["NVSwitch-Gen4"].other_64bit_bar_bytes == 0
    assert "B200-SXM-180GB" not in BAR_SIZE_REQUIRED


def test_h100_sxm5_bars_come_from_the_hgx_h100_host_facts():
    """Every 10de:2330 function of the HGX H100 host facts (BAR0/2/4, all 64-bit prefetchable, fastfetch#1658):
    BAR1 128 GiB and 16 + 32 MiB of other 64-bit BARs, as the catalog must count them (issue 22 item 8: was 32 MiB)."""
    facts = load_host_facts(HGX_H100_FACTS)
    h100 = [d for d in facts.devices.values() if d.node.vendor_id == 0x10DE and d.node.product_id == 0x2330]
    assert len(h100) == 8
    for d in h100:
        assert [(b.index, b.is_64bit, b.prefetchable) for b in d.bars] == [(0, True, True), (2, True, True), (4, True, True)]
    sizes = {catalog_bar_sizes(d.bars) for d in h100}
    assert sizes == {catalog_sizes("H100-SXM5-80GB")}
    assert GPU_MODELS["H100-SXM5-80GB"].pci_ids == ("10de:2330",)


# `nvidia-smi -q` product names of the captures in tests/fixtures/nvidia-smi/ -> catalog model.
Q_PRODUCTS = {
    "NVIDIA A100-SXM4-80GB": "A100-SXM4-80GB",
    "NVIDIA A100-SXM4-40GB": "A100-SXM4-40GB",
    "NVIDIA H100 80GB HBM3": "H100-SXM5-80GB",
    "NVIDIA L40S": "L40S",
    "Tesla P100-PCIE-16GB": "P100-PCIE-16GB",
}


def _mib(text: str) -> int:
    value, unit = text.split()
    assert unit == "MiB", text
    return int(value) * 1024 * 1024


def _q_bar1() -> dict[str, set[int]]:
    """Product name -> the GPU-level "BAR1 Memory Usage / Total" of every -q / -q -x capture (MIG instances' own BAR1 left out)."""
    import xml.etree.ElementTree as ET

    found: dict[str, set[int]] = {}
    for path in sorted(NVIDIA_SMI.glob("nvidia-smi-q-x.*.xml")):
        for gpu in ET.fromstring(path.read_text()).findall("gpu"):
            found.setdefault(gpu.findtext("product_name").strip(), set()).add(_mib(gpu.findtext("bar1_memory_usage/total")))
    for path in sorted(NVIDIA_SMI.glob("nvidia-smi-q.*.txt")):
        for gpu in parse_query(path.read_text())["gpus"]:
            found.setdefault(gpu["Product Name"], set()).add(_mib(gpu["BAR1 Memory Usage"]["Total"]))
    return found


def test_bar1_of_every_captured_model_matches_nvidia_smi_q():
    found = _q_bar1()
    assert set(Q_PRODUCTS) <= set(found), set(found)
    for product, model in Q_PRODUCTS.items():
        assert found[product] == {GPU_MODELS[model].bar1_bytes}, (product, found[product])


def _hgx_b(model: str) -> dict:
    """The dev stack with one Blackwell GPU and one NVSwitch-Gen4 (its barMib set: that part has no cited size)."""
    raw = copy.deepcopy(stack_file("dev"))
    raw["vms"][0]["gpus"] = [{"address": "0000:3b:00.0", "model": model, "numaNode": 0}]
    raw["vms"][0]["nvswitches"] = [{"address": "0000:05:00.0", "model": "NVSwitch-Gen4", "numaNode": 0, "barMib": 32}]
    return raw


def test_a_b200_needs_no_bar1gib_and_is_sized_from_the_capture():
    cfg, _ = parse_stack_config(_hgx_b("B200-SXM-180GB"), SECRETS)
    vm = cfg.vms[0]
    bar1, other = catalog_bar_sizes(parse_lspci_regions(B200.read_text()))
    switch_bytes = sum(s.bar_mib * 1024 * 1024 for s in vm.nvswitches)
    assert device_bar_bytes(vm) == len(vm.gpus) * (bar1 + other) + switch_bytes


def test_a_b300_without_bar1gib_is_refused_by_key():
    model = "B300-SXM-288GB"
    with pytest.raises(ConfigError) as e:
        parse_stack_config(_hgx_b(model), SECRETS)
    assert any(i.path == "vms[0].gpus[0].bar1Gib" and "lspci -vv" in i.message for i in e.value.issues)
