"""nvidia-smi parsers on real output.

fixtures/nvidia-smi/seed001-p100-535.261.03.txt is the `nvidia-smi` table seed 001
captured on a Tesla P100 with driver 535.261.03. No real `--query-gpu` CSV has
been captured yet (no GPU machine was lent to the session that wrote this);
the CSV test below uses the documented format and is marked as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from render.verify_output import parse_banner, parse_query_csv, parse_verify_output
from tests.support.nvidia_smi import parse_table_gpus

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"


def test_banner_of_a_real_p100_capture():
    text = (FIXTURES / "seed001-p100-535.261.03.txt").read_text()
    assert parse_banner(text) == {"driver_version": "535.261.03", "cuda_version": "12.2"}


def test_table_rows_of_a_real_p100_capture():
    text = (FIXTURES / "seed001-p100-535.261.03.txt").read_text()
    assert parse_table_gpus(text) == [(0, "Tesla P100-PCIE-16GB", "00000000:03:00.0")]


def test_banner_missing_is_an_error():
    with pytest.raises(ValueError, match="banner"):
        parse_banner("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


def test_query_csv_in_the_documented_format():
    """Format per `nvidia-smi --help-query-gpu`; replace with a real capture when a GPU machine is available."""
    rows = parse_query_csv(
        "0, NVIDIA H800, GPU-5a9d0f0e-0000-0000-0000-000000000000, 00000000:18:00.0, 570.172.08, 81559 MiB\n"
        "1, NVIDIA H800, GPU-77c1e2aa-0000-0000-0000-000000000000, 00000000:2A:00.0, 570.172.08, 81559 MiB\n"
    )
    assert [(r.index, r.bus_id, r.memory_mib) for r in rows] == [(0, "00000000:18:00.0", 81559), (1, "00000000:2A:00.0", 81559)]


def test_verify_output_combines_inventory_and_real_banner():
    banner = (FIXTURES / "seed001-p100-535.261.03.txt").read_text()
    text = ("--- gpu-inventory ---\n0, Tesla P100-PCIE-16GB, GPU-1c2d, 00000000:03:00.0, 535.261.03, 16384 MiB\n"
            f"--- nvidia-smi ---\n{banner}")
    out = parse_verify_output(text)
    assert out["cudaVersion"] == "12.2" and out["gpus"][0]["name"] == "Tesla P100-PCIE-16GB"


# --- doctor / verify parsers on the real captures in fixtures/nvidia-smi (PROVENANCE.md) -------------

from doctor.nvidia_smi import (  # noqa: E402
    XID_MEANINGS,
    na,
    normalize_pci,
    parse_list,
    parse_nvlink_status,
    parse_query,
    parse_topo_matrix,
    parse_xid_lines,
    query_gpus,
    strip_ansi,
)
from tests.support.nvidia_smi import parse_query_fabric, query_gpus_xml  # noqa: E402

H100_8_UUIDS = ["GPU-c7a0294c-c2c2-5476-438c-fb468eaa223b", "GPU-27196ced-a067-4406-2159-46448710fc9c",
                "GPU-0d9ce0d5-22a0-fdf7-c891-f26e86f907b6", "GPU-7353c83a-0617-7238-ca5a-9b9c80212c46",
                "GPU-b71a1811-5b24-ae65-9a8f-4118c7c1db31", "GPU-4a360bd8-44cd-43cb-9dc8-1b47ce52e162",
                "GPU-590d9f08-faf1-6a7d-70a1-b15156fd95aa", "GPU-5534d557-2a95-300a-81e6-7b626d87378a"]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_list_8xh100_guest_matches_gpus_by_uuid():
    gpus = parse_list(fixture("nvidia-smi-L.8xH100-SXM.kvm-guest.txt"))
    assert [g.index for g in gpus] == list(range(8))
    assert [g.uuid for g in gpus] == H100_8_UUIDS
    assert {g.name for g in gpus} == {"NVIDIA H100 80GB HBM3"}


def test_list_masked_uuids_and_mig_devices():
    (gpu,) = parse_list(fixture("nvidia-smi-L.1xH100-MIG-VM.590.48.01.txt"))
    assert gpu.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert [(m.profile, m.device) for m in gpu.mig] == [("3g.40gb", 0), ("2g.20gb", 1), ("1g.10gb", 2), ("1g.10gb", 3)]
    assert gpu.mig[3].uuid == "MIG-00000003-0000-0000-0000-000000000003"
    (l40s,) = parse_list(fixture("nvidia-smi-L.1xL40S-VM.595.80.txt"))
    assert (l40s.name, l40s.mig) == ("NVIDIA L40S", ())


def test_list_refuses_an_error_message():
    with pytest.raises(ValueError, match="not an `nvidia-smi -L` line"):
        parse_list("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")


def test_topo_11_nics_with_ansi_escapes():
    text = fixture("nvidia-smi-topo-m.8xH100-SXM-NVSwitch-11NIC.580.126.20.txt")
    assert "\x1b[4m" in text and "\x1b" not in strip_ansi(text)
    topo = parse_topo_matrix(text)
    assert topo.gpus() == tuple(f"GPU{i}" for i in range(8))
    assert len(topo.devices) == 19 and topo.devices[-1] == "NIC10"
    links = topo.gpu_links()
    assert len(links) == 28 and set(links.values()) == {"NV18"}
    assert topo.links[("GPU0", "NIC0")] == "PIX" and topo.links[("GPU0", "NIC1")] == "PXB" and topo.links[("GPU4", "NIC0")] == "SYS"
    assert topo.links[("NIC9", "NIC10")] == "PIX"
    assert topo.cpu_affinity["GPU0"] == "0-55,112-167" and topo.cpu_affinity["GPU7"] == "56-111,168-223"
    assert topo.numa_affinity["GPU5"] == "1" and topo.gpu_numa_id["GPU5"] is None  # N/A
    assert topo.nic_legend["NIC9"] == "mlx5_10"  # the numbering skips mlx5_9


def test_topo_8xh100_guest_flat_numa_all_nv18():
    topo = parse_topo_matrix(fixture("nvidia-smi-topo-m.8xH100-NVSwitch.kvm-guest.txt"))
    assert set(topo.gpu_links().values()) == {"NV18"}
    assert set(topo.cpu_affinity.values()) == {"0-63"} and set(topo.numa_affinity.values()) == {"0"}


def test_topo_single_gpu_vms():
    for name, cpus in (("nvidia-smi-topo-m.1xH100-SXM-80GB-VM.590.48.01.txt", "0-19"), ("nvidia-smi-topo-m.1xL40S-VM.595.80.txt", "0-7")):
        topo = parse_topo_matrix(fixture(name))
        assert topo.devices == ("GPU0",) and topo.gpu_links() == {} and topo.cpu_affinity == {"GPU0": cpus}


def test_nvlink_18_links_on_h100_and_none_on_l40s():
    (h100,) = parse_nvlink_status(fixture("nvidia-smi-nvlink-s.1xH100-SXM-80GB-VM.590.48.01.txt"))
    assert h100.supported and [link for link, _ in h100.links] == list(range(18))
    assert {speed for _, speed in h100.links} == {26.562} and h100.inactive() == []
    (l40s,) = parse_nvlink_status(fixture("nvidia-smi-nvlink-s.1xL40S-VM.595.80.txt"))
    assert not l40s.supported and l40s.links == ()


def test_nvlink_snipped_paste_is_flagged():
    gpus = parse_nvlink_status(fixture("nvidia-smi-nvlink-status.8xH100.kvm-guest.AUTHOR-SNIPPED.txt"))
    assert [g.uuid for g in gpus] == H100_8_UUIDS
    assert all(g.snipped and [link for link, _ in g.links] == [0, 1, 17] for g in gpus)


def test_nvlink_inactive_link():
    text = fixture("nvidia-smi-nvlink-s.1xH100-SXM-80GB-VM.590.48.01.txt").replace("Link 5: 26.562 GB/s", "Link 5: <inactive>")
    (gpu,) = parse_nvlink_status(text)
    assert gpu.inactive() == [5]


def test_query_h100_fabric_completed_and_persistence():
    text = fixture("nvidia-smi-q.1xH100-SXM-80GB-VM.590.48.01.txt")
    head, (gpu,) = query_gpus(text)
    assert head == {"driver_version": "590.48.01", "cuda_version": "13.1", "attached_gpus": "1"}
    assert (gpu.bus_id, gpu.persistence_mode, gpu.virtualization_mode, gpu.mig_mode) == ("00000000:00:09.0", "Enabled", "Pass-Through", "Disabled")
    (fabric,) = parse_query_fabric(text)
    assert fabric.ok and (fabric.state, fabric.status) == ("Completed", "Success")
    tree = parse_query(text)["gpus"][0]
    assert tree["PCI"]["GPU Link Info"]["Link Width"]["Max"] == "16x"
    assert tree["Display Mode"] == "Requested functionality has been deprecated"


def test_query_l40s_fabric_na():
    text = fixture("nvidia-smi-q.1xL40S-VM.595.80.txt")
    (fabric,) = parse_query_fabric(text)
    assert (fabric.state, fabric.status, fabric.ok) == (None, None, False)
    assert query_gpus(text)[1][0].persistence_mode == "Disabled"


def test_query_xml_captures():
    head, gpus = query_gpus_xml(fixture("nvidia-smi-q-x.4xA100-SXM4-80GB-MIG.535.54.03.xml"))
    assert head["attached_gpus"] == "4" and len(gpus) == 1  # the fixture keeps only the first <gpu>
    assert (gpus[0].mig_mode, gpus[0].virtualization_mode, gpus[0].remapping_failure) == ("Enabled", "None", None)
    _, (p100,) = query_gpus_xml(fixture("nvidia-smi-q-x.1xP100-PCIE-16GB-VM-passthrough.510.47.03.xml"))
    assert (p100.name, p100.uuid, p100.virtualization_mode) == ("Tesla P100-PCIE-16GB", "GPU-d3da8716-eaab-75db-efc1-60e88e1cd55e", "Pass-Through")
    _, (a10g,) = query_gpus_xml(fixture("nvidia-smi-q-x.1xA10G.515.105.01.xml"))
    assert normalize_pci(a10g.bus_id) == "0000:00:1e.0"


def test_pci_forms_and_na():
    assert normalize_pci("00000000:1B:00.0") == normalize_pci("0000:1b:00.0") == normalize_pci("1b:00.0") == "0000:1b:00.0"
    assert na("[N/A]") is None and na("N/A") is None and na(" 0 ") == "0"
    with pytest.raises(ValueError):
        normalize_pci("3b:00")


def test_xid_lines_and_meanings():
    dmesg = ("[ 12.0] nvidia: loading out-of-tree module taints kernel.\n"
             "[ 99.1] NVRM: Xid (PCI:0000:0d:00): 79, pid=2116, name=nv-fabricmanage, GPU has fallen off the bus.\n"
             "[ 99.2] NVRM: GPU 0000:0d:00.0: GPU has fallen off the bus.\n"
             "[120.5] NVRM: Xid (PCI:0000:0e:00): 13, pid=4242, name=python, Graphics Exception: ESR 0x404600=0x80000001\n")
    events = parse_xid_lines(dmesg)
    assert [(e.pci, e.code, e.category) for e in events] == [("PCI:0000:0d:00", 79, "bus"), ("PCI:0000:0e:00", 13, "application")]
    assert "fallen off the bus" in events[0].meaning
    assert {c for c, (cat, _) in XID_MEANINGS.items() if cat == "memory"} >= {48, 63, 64, 94, 95}
    assert {c for c, (cat, _) in XID_MEANINGS.items() if cat == "application"} == {13, 31, 43}


def test_query_gpu_csv_with_header_on_real_captures():
    from tests.support.nvidia_smi import parse_query_gpu_csv

    (p100,) = parse_query_gpu_csv(fixture("nvidia-smi-query-gpu.1xP100-PCIE-16GB.csv"))  # no trailing newline
    assert p100["name"] == "Tesla P100-PCIE-16GB" and p100["fan.speed"] is None  # [N/A]
    assert p100["memory.free"] == "16280" and "index" not in p100
    (h100,) = parse_query_gpu_csv(fixture("nvidia-smi-query-gpu-allfields.1xH100-SXM-80GB-VM.590.48.01.csv"))
    assert len(h100) == 212 and h100["pci.bus_id"] == "00000000:00:09.0" and h100["memory.total"] == "81559 MiB"
    assert normalize_pci(h100["pci.bus_id"]) == "0000:00:09.0" and h100["uuid"] == "GPU-00000000-0000-0000-0000-000000000000"
    (l40s,) = parse_query_gpu_csv(fixture("nvidia-smi-query-gpu-allfields.1xL40S-VM.595.80.csv"))
    fabric = {k: v for k, v in l40s.items() if k.startswith("fabric.")}
    assert fabric and set(fabric.values()) == {None}  # bare N/A on the L40S
    assert l40s["display_mode"] == "[Requested functionality has been deprecated]"


def test_query_gpu_csv_unknown_field_fails_the_whole_query():
    from tests.support.nvidia_smi import parse_query_gpu_csv

    with pytest.raises(ValueError, match="'throttle_reasons.active' is not valid"):
        parse_query_gpu_csv(fixture("nvidia-smi-query-gpu.invalid-field-error.8xH100-SXM.580.126.20.txt"))


def test_xid_119_and_120_gsp_have_nvidia_meaning_and_fix():
    """Issue 22 item 8: Xid 119 (GSP RPC timeout) had no entry, so the doctor said only "see NVIDIA's XID catalogue".
    The lines follow the driver's format strings (NVIDIA/open-gpu-kernel-modules, kernel_gsp.c: "Timeout waiting for RPC
    from GSP%d! Expected function %d (%s) (0x%x 0x%x)."; 120: "GSP kernel exception: ..." as a real RTX PRO 6000 log shows)."""
    from doctor.diagnosis import _xid_results

    dmesg = ("[4242.1] NVRM: Xid (PCI:0000:0d:00): 119, pid=3101, name=python, Timeout waiting for RPC from GSP0! "
             "Expected function 76 (GSP_RM_CONTROL) (0x20800a4c 0x4).\n"
             "[4243.0] NVRM: Xid (PCI:0000:0e:00): 120, GSP kernel exception: store access page fault (cause:0xf) @ pc:0xffffffff93003d42, partition:4#0\n")
    events = parse_xid_lines(dmesg)
    assert [(e.code, e.category) for e in events] == [(119, "firmware"), (120, "firmware")]
    for e in events:
        assert "GSP" in e.meaning and "reset the GPU" in e.meaning and "investigate the software" in e.meaning
    results = {r.check: r for r in _xid_results(events, None)}
    assert results["Xid 119"].status == "FAIL" and "GSP RPC timeout" in results["Xid 119"].fix
    assert results["Xid 120"].status == "FAIL" and "GSP error" in results["Xid 120"].fix


TOPO_CAPTURES = sorted(p.name for p in FIXTURES.glob("nvidia-smi-topo-m.*.txt"))


@pytest.mark.parametrize("name", TOPO_CAPTURES)
def test_topo_pasted_with_spaces_parses_as_the_tab_capture(name):
    """Issue 22 item 8: a `topo -m` pasted from a terminal has its TABs expanded to spaces (and no ANSI
    escapes, which the terminal rendered); that raised ValueError. The space form here is each real TAB
    capture after exactly that: strip the escapes, expand TABs to 8-column stops."""
    tabbed = fixture(name)
    spaced = strip_ansi(tabbed).expandtabs(8)
    assert "\t" not in spaced and "CPU Affinity" in spaced
    a, b = parse_topo_matrix(tabbed), parse_topo_matrix(spaced)
    assert a.gpus() and b == a
    for gpu in b.gpus():  # the multi-word columns: every capture has CPU Affinity, NUMA Affinity and GPU NUMA ID
        assert b.cpu_affinity[gpu] and b.numa_affinity[gpu] is not None and gpu in b.gpu_numa_id


def test_topo_space_form_values_of_the_11nic_capture():
    topo = parse_topo_matrix(strip_ansi(fixture("nvidia-smi-topo-m.8xH100-SXM-NVSwitch-11NIC.580.126.20.txt")).expandtabs())
    assert topo.devices[-1] == "NIC10" and topo.links[("GPU0", "NIC1")] == "PXB" and topo.links[("NIC9", "NIC10")] == "PIX"
    assert (topo.cpu_affinity["GPU7"], topo.numa_affinity["GPU7"], topo.gpu_numa_id["GPU7"]) == ("56-111,168-223", "1", None)
    assert topo.nic_legend["NIC9"] == "mlx5_10"
