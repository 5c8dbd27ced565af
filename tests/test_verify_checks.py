"""The verify phase's guest-side checks on real nvidia-smi output (tests/fixtures/nvidia-smi, PROVENANCE.md).

scripts/guest/verify.sh parses topo -m, nvlink -s and -q in the guest (awk) and names GPUs by UUID.
Each negative case is the real capture with one line edited, so the check is shown to catch exactly
that and the unedited capture to pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.guest_sandbox import GuestSandbox
from tests.test_guest_scripts import config, phases_for

FIX = ROOT / "tests/fixtures/nvidia-smi"
H100_8 = {"L": FIX / "nvidia-smi-L.8xH100-SXM.kvm-guest.txt",
          "topo": FIX / "nvidia-smi-topo-m.8xH100-NVSwitch.kvm-guest.txt",
          "nvlink": FIX / "nvidia-smi-nvlink-status.8xH100.kvm-guest.AUTHOR-SNIPPED.txt"}
H100_1 = {"L": FIX / "nvidia-smi-L.1xH100-SXM-80GB-VM.590.48.01.txt",
          "topo": FIX / "nvidia-smi-topo-m.1xH100-SXM-80GB-VM.590.48.01.txt",
          "nvlink": FIX / "nvidia-smi-nvlink-s.1xH100-SXM-80GB-VM.590.48.01.txt",
          "q": FIX / "nvidia-smi-q.1xH100-SXM-80GB-VM.590.48.01.txt"}
L40S = {"L": FIX / "nvidia-smi-L.1xL40S-VM.595.80.txt", "q": FIX / "nvidia-smi-q.1xL40S-VM.595.80.txt",
        "nvlink": FIX / "nvidia-smi-nvlink-s.1xL40S-VM.595.80.txt"}
UUIDS_8 = re.findall(r"UUID: (GPU-[0-9a-f-]+)", H100_8["L"].read_text())


def _q_for_8(tmp: Path) -> Path:
    """Derived, not captured: the 8xH100 guest's -q was not published, so the real 1xH100 -q block
    (Fabric Completed/Success) is repeated with the 8 UUIDs of that guest's -L."""
    text = H100_1["q"].read_text()
    head, block = text.split("GPU 00000000:00:09.0\n", 1)
    blocks = [f"GPU 00000000:{0x0d + i:02X}:00.0\n" + block.replace("GPU-00000000-0000-0000-0000-000000000000", u)
              for i, u in enumerate(UUIDS_8)]
    path = tmp / "q-8xH100.txt"
    path.write_text(head.replace("Attached GPUs                                          : 1", "Attached GPUs                                          : 8") + "".join(blocks))
    return path


def _vm_config(gpus: int, nvswitches: int, model: str = "H100-SXM5-80GB"):
    raw = config()
    raw["vms"][0]["gpus"] = [{"address": f"0000:{0x18 + i:02x}:00.0", "model": model, "numaNode": 0} for i in range(gpus)]
    raw["vms"][0]["nvswitches"] = [{"address": f"0000:{0x05 + i:02x}:00.0", "numaNode": 0} for i in range(nvswitches)]
    return raw


def _run_verify(tmp_path, raw, outputs: dict, fm_active: bool = True):
    sb = GuestSandbox(tmp_path, "ubuntu", driver_loaded="570.172.08", driver_installed="570.172.08",
                      lspci_gpus=len(raw["vms"][0]["gpus"]), smi_outputs={k: str(v) for k, v in outputs.items()},
                      units={"nvidia-fabricmanager": {"enabled": True, "active": fm_active}},
                      status_outputs={"nvidia-fabricmanager": str(FIX / "systemctl-status-nvidia-fabricmanager.8xH100.kvm-guest.txt")})
    conf = sb.root / "etc/containerd/config.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n')
    phase = next(p for p in phases_for(raw) if p.name == "verify")
    return sb.run(phase)


def _edited(tmp_path: Path, source: Path, old: str, new: str, count: int = 1) -> Path:
    text = source.read_text()
    assert old in text
    path = tmp_path / f"edited-{source.name}"
    path.write_text(text.replace(old, new, count))
    return path


# --- 8xH100 guest with 4 NVSwitches --------------------------------------------------------

def test_8xh100_nvswitch_guest_passes(tmp_path):
    result = _run_verify(tmp_path, _vm_config(8, 4), {**H100_8, "q": _q_for_8(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "NVLink: 24 links up at 26.562 GB/s, every GPU pair NVLink-connected" in result.stdout


def test_a_pcie_pair_is_named_by_the_uuids_of_both_gpus(tmp_path):
    row3 = "GPU3\tNV18\tNV18\tNV18\t X \tNV18\tNV18\tNV18\tNV18"
    topo = _edited(tmp_path, H100_8["topo"], row3, "GPU3\tNV18\tNV18\tNV18\t X \tNV18\tPIX\tNV18\tNV18")
    result = _run_verify(tmp_path, _vm_config(8, 4), {**H100_8, "topo": topo, "q": _q_for_8(tmp_path)})
    assert result.returncode != 0 and "GPU pairs not connected by NVLink" in result.stderr
    assert f"GPU3 ({UUIDS_8[3]}) - GPU5 ({UUIDS_8[5]}): PIX" in result.stderr


def test_a_link_down_fails(tmp_path):
    gpu2 = H100_8["nvlink"].read_text().split("GPU 2:")[1]
    assert "\t Link 17: 26.562 GB/s" in gpu2
    nvlink = tmp_path / "nvlink-down.txt"
    text = H100_8["nvlink"].read_text()
    before, after = text.split("GPU 2:", 1)
    nvlink.write_text(before + "GPU 2:" + after.replace("\t Link 17: 26.562 GB/s", "\t Link 17: <inactive>", 1))
    result = _run_verify(tmp_path, _vm_config(8, 4), {**H100_8, "nvlink": nvlink, "q": _q_for_8(tmp_path)})
    assert result.returncode != 0 and "NVLinks are down" in result.stderr
    assert f"{UUIDS_8[2]} link 17" in result.stderr


def test_links_at_different_speeds_fail(tmp_path):
    nvlink = _edited(tmp_path, H100_8["nvlink"], "\t Link 1: 26.562 GB/s", "\t Link 1: 13.281 GB/s")
    result = _run_verify(tmp_path, _vm_config(8, 4), {**H100_8, "nvlink": nvlink, "q": _q_for_8(tmp_path)})
    assert result.returncode != 0 and "NVLinks run at different speeds (13.281 26.562 GB/s)" in result.stderr


def test_a_gpu_without_links_fails_by_uuid(tmp_path):
    text = H100_8["nvlink"].read_text()
    nvlink = tmp_path / "nvlink-missing.txt"
    nvlink.write_text(text.split("GPU 7:")[0])
    result = _run_verify(tmp_path, _vm_config(8, 4), {**H100_8, "nvlink": nvlink, "q": _q_for_8(tmp_path)})
    assert result.returncode != 0 and f"shows no links for {UUIDS_8[7]}" in result.stderr


def test_fabric_not_completed_on_one_gpu_fails_naming_it(tmp_path):
    q = _q_for_8(tmp_path)
    text = q.read_text()
    block6 = text.index(UUIDS_8[6])
    fabric = text.index("        State                                          : Completed", block6)
    q.write_text(text[:fabric] + text[fabric:].replace(": Completed", ": In Progress", 1).replace(": Success", ": Not Started", 1))
    result = _run_verify(tmp_path, _vm_config(8, 4), {**H100_8, "q": q})
    assert result.returncode != 0
    assert f"GPU {UUIDS_8[6]}: fabric State In Progress, Status Not Started" in result.stderr


def test_fabric_manager_down_shows_its_status(tmp_path):
    result = _run_verify(tmp_path, _vm_config(8, 4), {**H100_8, "q": _q_for_8(tmp_path)}, fm_active=False)
    assert result.returncode != 0 and "nvidia-fabricmanager is not active" in result.stderr
    assert "nvidia-fabricmanager.service - NVIDIA fabric manager service" in result.stderr


def test_gpu_count_comes_from_the_uuids(tmp_path):
    result = _run_verify(tmp_path, _vm_config(7, 0), {**H100_8, "q": _q_for_8(tmp_path)})  # 7 of a board: no partition with NVSwitches
    assert result.returncode != 0 and "nvidia-smi -L lists 8 GPUs, the config passes through 7" in result.stderr


# --- 1xH100 VM with 18 links, and a PCIe L40S ---------------------------------------------------

def test_1xh100_vm_18_links_and_fabric_completed(tmp_path):
    """A 1-GPU VM of an HGX H100 board gets no NVSwitch in full passthrough (Fabric Manager guide's table: 1 GPU,
    0 NVSwitches; stacks/checks.py refuses one), so the captured VM, whose fabric completed with its 18 links up,
    passes, and the NVSwitch checks (Fabric Manager, topo, nvlink -s) do not run for it."""
    result = _run_verify(tmp_path, _vm_config(1, 0), H100_1)
    assert result.returncode == 0, result.stderr
    assert "NVLink:" not in result.stdout and "nvidia-fabricmanager" not in result.stderr


def test_hgx_gpu_without_its_nvswitches_is_caught_by_the_fabric_state(tmp_path):
    """The config declares no NVSwitch; the GPU's fabric never completes (error 802 for CUDA)."""
    q = _edited(tmp_path, H100_1["q"], ": Completed", ": In Progress")
    result = _run_verify(tmp_path, _vm_config(1, 0), {**H100_1, "q": q})
    assert result.returncode != 0 and "fabric State In Progress, Status Success" in result.stderr


def test_pcie_gpu_with_no_fabric_passes(tmp_path):
    result = _run_verify(tmp_path, _vm_config(1, 0, "L40S"), L40S)
    assert result.returncode == 0, result.stderr
