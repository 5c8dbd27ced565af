"""The burn-in gate (issue 27): parsers on the real captures, the expected bandwidth per catalog model, the verdict."""

from __future__ import annotations

import pytest

from render import burnin
from render.burnin import Gpu, evaluate, expected_busbw, parse_all_reduce_perf, parse_dcgmi_diag, parse_nccl_transports, parse_topo_p2p
from config.catalog import BUSBW_REQUIRED, GPU_MODELS, INTERCONNECT, NVLINK_GENERATION, NVSWITCH_BOARD, PCIE_GPUS
from doctor.nvidia_smi import parse_nvlink_status
from tests.conftest import ROOT

F = ROOT / "tests" / "fixtures" / "burn-in"
H100_RUN = "all_reduce_perf.8xH100-SXM-80GB-HGX-single-node.550.90.07.REINDENTED.txt"
A100_RUN = "all_reduce_perf.8xA100-SXM4-40GB-OCI-BM.GPU4.8.single-size-10G.txt"
A3_RUN = "all_reduce_perf.2x8xH100-SXM-GCP-A3-Mega-TCPXO.16GPU.txt"
V100_PAIRS = "all_reduce_perf.2xV100-SXM2-pairs.P2P-on-vs-off.openshift-pod.txt"
CUDA_ERROR = "all_reduce_perf.8xH100-SXM.fabricmanager-down.cuda-error.txt"
DCGM_PASS = "dcgmi-diag-r3-v.1xV100-PCIE-16GB.PASS.dcgm-3.3.9.560.35.03.txt"
DCGM_FM_DOWN = "dcgmi-diag-r3.8xH100-SXM.fabricmanager-down.FAIL.dcgm-3.3.8.560.35.03.txt"
DCGM_PERSISTENCE = "dcgmi-diag-r4.1xRTX2060S.persistence-mode-FAIL.txt"
DCGM_4 = "dcgmi-diag.8xV100-SXM2-32GB.dcgm-4.1.1.570.124.06.level-not-recorded.txt"
TOPO_P2P = "nvidia-smi-topo-p2p-n+p.8xV100-SXM2-hybrid-cube-mesh.txt"
H100_BUS = ("1b", "43", "52", "61", "9d", "c3", "d1", "df")


def text(name: str) -> str:
    return (F / name).read_text()


def h100_gpus() -> list[Gpu]:
    return [Gpu(i, f"GPU-h100-{i}", f"0000:{b}:00.0") for i, b in enumerate(H100_BUS)]


# --- all_reduce_perf ---------------------------------------------------------------------------------------


def test_h100_nvswitch_run_gates_on_the_largest_size_not_the_average():
    (run,) = parse_all_reduce_perf(text(H100_RUN))
    assert run.ok and run.n_gpus == 8
    assert [d.bus for d in run.devices] == [f"0x{b}" for b in H100_BUS]
    assert [r.size_bytes for r in run.rows] == [268435456, 536870912, 1073741824, 2147483648]
    assert run.busbw == 470.73 and run.avg_busbw == 448.212  # gate on the first, never the second
    assert run.largest.busbw_in == 470.63 and run.wrong == 0 and run.out_of_bounds == 0


def test_a100_nvswitch_single_size_run():
    (run,) = parse_all_reduce_perf(text(A100_RUN))
    assert run.ok and run.n_gpus == 8 and len(run.rows) == 1
    assert run.largest.size_bytes == 10 * 1024**3 and run.busbw == 235.43
    assert {d.host for d in run.devices} == {"compute-permanent-node-789"}


def test_multi_node_run_average_is_far_below_the_largest_size():
    (run,) = parse_all_reduce_perf(text(A3_RUN))
    assert run.n_gpus == 16 and run.devices[15].bus == "0000:8c:00" and run.devices[15].host == "ztan-mig-gq73"
    assert run.rows[0].size_bytes == 8 and run.largest.size_bytes == 8 * 1024**3
    assert run.busbw == 338.82 and run.avg_busbw == 70.742


def test_p2p_on_off_pairs_show_the_shm_fallback():
    runs = parse_all_reduce_perf(text(V100_PAIRS))
    assert len(runs) == 6
    by = {(r.command.split("CUDA_VISIBLE_DEVICES=")[1].split()[0], "P2P_DISABLE=1" in r.command): r.busbw for r in runs}
    assert by[("0,3", False)] == 42.36 and by[("0,2", False)] == 21.86  # NV2, NV1
    assert all(by[(pair, True)] < 6 for pair in ("0,2", "0,3", "0,6"))  # P2P off: every pair at the SHM level
    assert all(r.rows[0].wrong_out is None for r in runs)  # `-c 0`: #wrong reads N/A, not a failure
    assert all(r.ok for r in runs)


def test_cuda_error_run_has_no_table_and_is_not_ok():
    (run,) = parse_all_reduce_perf(text(CUDA_ERROR))
    assert not run.ok and run.rows == () and run.busbw is None and run.avg_busbw is None
    assert "system not yet initialized" in run.errors[0]


def test_no_header_is_no_run():
    assert parse_all_reduce_perf("bash: all_reduce_perf: command not found\n") == []


def test_nccl_transport_lines_in_the_format_nccl_prints():
    # No capture has them (tests/fixtures/burn-in/PROVENANCE.md). These lines are built from the format
    # strings of NCCL v2.30.7-1 (src/debug.cc prefix; src/transport/p2p.cc, shm.cc, net.cc), not copied output.
    log = ("node-a:101:205 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n"
           "node-a:101:205 [1] NCCL INFO Channel 00 : 1[1] -> 2[2] via SHM/direct\n"
           "node-a:101:205 [2] NCCL INFO Channel 01/0 : 2[2] -> 3[3] [send] via NET/IB/0/GDRDMA\n"
           "node-a:101:205 [0] NCCL INFO Connected all rings, use ring PXN 0 GDR 1\n")
    kinds = [(t.src_dev, t.dst_dev, t.kind) for t in parse_nccl_transports(log)]
    assert kinds == [(0, 1, "P2P"), (1, 2, "SHM"), (2, 3, "NET")]


# --- dcgmi diag ---------------------------------------------------------------------------------------------


def test_dcgm_pass_dcgm3_layout():
    diag = parse_dcgmi_diag(text(DCGM_PASS))
    assert diag.ok and diag.metadata["DCGM Version"] == "3.3.9"
    names = {t.name: t.result for t in diag.tests}
    assert names["GPU Memory"] == "Pass" and names["EUD Test"] == "Skip" and len(names) == 15
    pcie = next(t for t in diag.tests if t.name == "PCIe")
    assert pcie.category == "Integration" and "Host to GPU bandwidth: 12.37 GB/s" in pcie.messages[0][1]


def test_dcgm_fabric_manager_down_fails_gpu_memory_on_every_gpu():
    diag = parse_dcgmi_diag(text(DCGM_FM_DOWN))
    assert not diag.ok
    (failed,) = diag.failed
    assert failed.name == "GPU Memory" and failed.scope == "All" and failed.failed_gpus() == tuple(range(8))
    assert "'system not yet initialized'" in failed.messages[0][1]  # the hard-wrapped cell rejoined exactly
    persistence = next(t for t in diag.tests if t.name == "Persistence Mode")
    assert persistence.result == "Pass" and persistence.messages[0][0] == "Info"  # 3.3.8: only Info, not a failure


def test_dcgm_persistence_mode_failure_older_layout():
    diag = parse_dcgmi_diag(text(DCGM_PERSISTENCE))
    assert diag.metadata == {}  # this layout has no Metadata block
    (failed,) = diag.failed
    assert failed.name == "Persistence Mode" and failed.category == "Deployment" and failed.failed_gpus() == (0,)
    assert "requires peristence mode" in failed.messages[0][1]


def test_dcgm4_layout_per_gpu_lines():
    diag = parse_dcgmi_diag(text(DCGM_4))
    assert diag.ok and diag.metadata["DCGM Version"] == "4.1.1"
    (software,) = diag.tests
    assert software.name == "software" and software.per_gpu == tuple((i, "Pass") for i in range(8))


def test_dcgm4_per_gpu_fail_counts_even_when_the_row_passes():
    lines = text(DCGM_4).splitlines()
    at = next(i for i, line in enumerate(lines) if "GPU3: Pass" in line)
    lines[at] = lines[at].replace("GPU3: Pass", "GPU3: Fail")
    diag = parse_dcgmi_diag("\n".join(lines))
    assert not diag.ok and diag.failed[0].failed_gpus() == (3,)


def test_dcgm_without_a_table_is_an_error():
    with pytest.raises(ValueError, match="no dcgmi diag table: Error: unable to connect"):
        parse_dcgmi_diag("Error: unable to connect to host engine\n")


# --- topo -p2p ----------------------------------------------------------------------------------------------


def test_topo_p2p_matrices_with_their_modes():
    nvlink, pcie = parse_topo_p2p(text(TOPO_P2P))
    assert nvlink.mode == "n" and pcie.mode == "p" and len(nvlink.gpus) == 8
    assert nvlink.status[(0, 3)] == "OK" and nvlink.status[(0, 5)] == "NS"
    assert len(nvlink.not_ok()) == 8 * 3  # each V100 has no NVLink to three of the others (hybrid cube-mesh)
    assert {s for _, _, s in pcie.not_ok()} == {"NS"} and len(pcie.not_ok()) == 56


# --- expected bandwidth per catalog model ---------------------------------------------------------------------


def test_h100_figure_is_derived_from_the_nvlink_capture():
    (gpu,) = parse_nvlink_status((ROOT / "tests/fixtures/nvidia-smi/nvidia-smi-nvlink-s.1xH100-SXM-80GB-VM.590.48.01.txt").read_text())
    ic = INTERCONNECT["H100-SXM5-80GB"]
    assert ic.nvlink_links == len(gpu.links) == 18
    assert {rate for _, rate in gpu.links} == {ic.nvlink_link_gbps}
    assert ic.reference_busbw_gbps == round(len(gpu.links) * gpu.links[0][1], 1)


def test_a100_figure_is_the_measured_run():
    (run,) = parse_all_reduce_perf(text(A100_RUN))
    assert INTERCONNECT["A100-SXM4-40GB"].reference_busbw_gbps == run.busbw


@pytest.mark.parametrize("model", sorted(GPU_MODELS))
def test_expected_busbw_per_catalog_model(model):
    ic = INTERCONNECT[model]
    assert ic.nvlink_generation == NVLINK_GENERATION.get(model, 0)
    assert ic.nvswitch == (model in NVSWITCH_BOARD) and (model in PCIE_GPUS) == (ic.nvlink_generation == 0)
    assert ic.source  # every figure says where it comes from
    eight = expected_busbw(model, 8)
    assert expected_busbw(model, 1).busbw_gbps is None and expected_busbw(model, 1).origin == "n/a"
    if model in BUSBW_REQUIRED:
        assert eight.busbw_gbps is None and eight.origin == "missing"
        configured = expected_busbw(model, 8, {model: 123.0})
        assert configured.busbw_gbps == 123.0 and configured.origin == "config"
    else:
        assert eight.origin == "catalog" and eight.busbw_gbps == ic.reference_busbw_gbps
    assert eight.p2p_required == (ic.nvlink_generation > 0)


def test_unsourced_models_are_exactly_the_ones_without_a_cited_figure():
    assert {"H800-SXM5-80GB", "A800-SXM4-80GB", "B200-SXM-180GB", "B300-SXM-288GB", "V100-SXM2-32GB"} <= BUSBW_REQUIRED
    assert BUSBW_REQUIRED >= PCIE_GPUS
    assert not {"H100-SXM5-80GB", "H200-SXM-141GB", "H20-96GB", "A100-SXM4-80GB", "A100-SXM4-40GB"} & BUSBW_REQUIRED


def test_partition_scales_by_the_partitions_nvswitches():
    assert expected_busbw("A100-SXM4-80GB", 4).busbw_gbps == round(235.43 * 3 / 6, 1)
    assert expected_busbw("A100-SXM4-80GB", 2).busbw_gbps == round(235.43 / 6, 1)
    odd = expected_busbw("H100-SXM5-80GB", 4)  # the guide lists no 4-GPU H100 partition
    assert odd.busbw_gbps is None and odd.origin == "missing"


def test_the_real_runs_pass_their_own_models_gate():
    h100 = expected_busbw("H100-SXM5-80GB", 8)
    v = evaluate("gpu-0", h100_gpus(), h100, min_fraction=0.8, dcgm_text=None, nccl_text=text(H100_RUN), p2p_text=None)
    assert v.ok and v.busbw_gbps == 470.73 and v.expected_gbps == 478.1
    a100 = expected_busbw("A100-SXM4-40GB", 8)
    assert evaluate("gpu-1", [], a100, min_fraction=0.8, dcgm_text=None, nccl_text=text(A100_RUN), p2p_text=None).ok


# --- the verdict ------------------------------------------------------------------------------------------------


def test_low_busbw_names_measured_and_expected():
    # the H100 run against a stricter fraction: 470.73 < 0.99 x 478.1
    v = evaluate("gpu-0", h100_gpus(), expected_busbw("H100-SXM5-80GB", 8), min_fraction=0.99,
                 dcgm_text=None, nccl_text=text(H100_RUN), p2p_text=None)
    assert not v.ok
    (line,) = v.failures
    assert line.startswith("gpu-0: ") and "busbw 470.73 GB/s at 2147483648 B" in line and "expected 478.1 GB/s" in line
    assert "doctor `guest driver: NVLink`" in line


def test_a_v100_pair_with_p2p_off_fails_against_its_p2p_on_figure():
    off = parse_all_reduce_perf(text(V100_PAIRS))[5]  # 0,3 with NCCL_P2P_DISABLE=1
    assert "NCCL_P2P_DISABLE=1" in off.command
    on_figure = parse_all_reduce_perf(text(V100_PAIRS))[4].busbw
    exp = expected_busbw("V100-SXM2-32GB", 2, {"V100-SXM2-32GB": on_figure})
    v = evaluate("v100", [], exp, min_fraction=0.8, dcgm_text=None, nccl_text=off.command + "\n" + _run_block(5), p2p_text=None)
    assert not v.ok and "busbw 5.52 GB/s" in v.failures[0] and "expected 42.36 GB/s = 33.9 (config: burnIn.expectedBusbwGbps[V100-SXM2-32GB])" in v.failures[0]


def _run_block(n: int) -> str:
    lines = text(V100_PAIRS).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("# nThread")]
    end = starts[n + 1] if n + 1 < len(starts) else len(lines)
    return "\n".join(lines[starts[n]:end])


def test_fabric_manager_down_fails_both_tests_and_names_the_diagnosis():
    v = evaluate("gpu-0", h100_gpus(), expected_busbw("H100-SXM5-80GB", 8), min_fraction=0.8,
                 dcgm_text=text(DCGM_FM_DOWN), nccl_text=text(CUDA_ERROR), p2p_text=None)
    assert not v.ok and v.dcgm == "fail" and v.busbw_gbps is None
    dcgm, nccl = v.failures
    assert "all 8 GPUs: dcgmi diag `GPU Memory` (Hardware) Fail" in dcgm and "Fabric Manager active" in dcgm
    assert "all_reduce_perf failed: test: Test CUDA failure" in nccl and "seed 003" in nccl


def test_persistence_failure_names_the_gpu_by_index_uuid_and_pci_address():
    v = evaluate("gpu-9", [Gpu(0, "GPU-abc", "0000:01:00.0")], expected_busbw("L40S", 1), min_fraction=0.8,
                 dcgm_text=text(DCGM_PERSISTENCE), nccl_text=None, p2p_text=None)
    (line,) = v.failures
    assert line.startswith("gpu-9: GPU 0 (GPU-abc, 0000:01:00.0): dcgmi diag `Persistence Mode`")
    assert "guest driver: persistence mode" in line


def test_p2p_not_ok_on_an_nvlink_node_names_the_link_and_the_cause():
    # the captured `-p2p n` matrix stands in for `-p2p r` (no `r` capture exists): NS between non-neighbours
    matrix = text(TOPO_P2P).split("nvidia-smi topo -p2p p")[0].replace("-p2p n", "-p2p r")
    gpus = [Gpu(i, f"GPU-{i}", f"0000:{i:02x}:00.0") for i in range(8)]
    v = evaluate("v100", gpus, expected_busbw("V100-SXM2-32GB", 8, {"V100-SXM2-32GB": 100}), min_fraction=0.8,
                 dcgm_text=None, nccl_text=None, p2p_text=matrix)
    (line,) = v.failures
    assert v.p2p == "fail" and "link GPU 0 (GPU-0, 0000:00:00.0) -> GPU 5 (GPU-5, 0000:05:00.0): P2P read NS" in line
    assert "24 of 56 GPU pairs" in line


def test_p2p_not_ok_on_a_pcie_node_is_reported_not_gated():
    v = evaluate("pcie", [], expected_busbw("L40S", 8, {"L40S": 20}), min_fraction=0.8, dcgm_text=None, nccl_text=None,
                 p2p_text=text(TOPO_P2P).split("nvidia-smi topo -p2p p")[1])
    assert v.ok and v.p2p == "not-required"


def test_shm_transport_on_an_nvlink_node_fails():
    log = text(H100_RUN) + "\nh:1:2 [0] NCCL INFO Channel 00 : 0[0] -> 1[1] via SHM/direct\n"
    v = evaluate("gpu-0", h100_gpus(), expected_busbw("H100-SXM5-80GB", 8), min_fraction=0.8, dcgm_text=None, nccl_text=log, p2p_text=None)
    (line,) = v.failures
    assert "link GPU 0 (GPU-h100-0, 0000:1b:00.0) -> GPU 1 (GPU-h100-1, 0000:43:00.0): NCCL chose SHM/direct" in line


def test_a_step_that_printed_nothing_fails_and_one_that_did_not_run_does_not():
    exp = expected_busbw("H100-SXM5-80GB", 8)
    assert not evaluate("n", [], exp, min_fraction=0.8, dcgm_text="", nccl_text="", p2p_text="").ok
    assert evaluate("n", [], exp, min_fraction=0.8, dcgm_text=None, nccl_text=None, p2p_text=None).ok


def test_as_output_shape():
    v = evaluate("gpu-0", h100_gpus(), expected_busbw("H100-SXM5-80GB", 8), min_fraction=0.8,
                 dcgm_text=text(DCGM_4), nccl_text=text(H100_RUN), p2p_text=None)
    assert v.as_output() == {"ok": True, "dcgm": "pass", "busbwGbps": 470.73, "expectedBusbwGbps": 478.1, "p2p": "skipped", "failures": []}
    assert burnin.DIAGNOSE  # every cause has its diagnosis line


# --- the plan: which nodes burn in, and where their figure comes from --------------------------------------------


def _cfg(stack: str):
    from stacks.load import parse_stack_config
    from tests.conftest import stack_file
    return parse_stack_config(stack_file(stack), {"sshPrivateKey", "grafanaAdminPassword", "kubevirtKubeconfig", "vsphereUser", "vspherePassword"}, stack)[0]


def test_node_plans_of_the_example_stacks():
    prod = burnin.node_plans(_cfg("prod"))
    (plan,) = prod.values()
    assert plan.gpus == 8 and plan.request == 8
    assert plan.expected.origin == "config" and plan.expected.busbw_gbps == 200 and plan.expected.p2p_required
    dev = burnin.node_plans(_cfg("dev"))["gpu-dev-0"]
    assert dev.request == 1 and dev.expected.origin == "n/a"  # one L40S, time-sliced: its one replica is the whole GPU
    fleet = burnin.node_plans(_cfg("fleet"))
    assert fleet and all(p.expected.source == "burnIn.nccl is false" for p in fleet.values())


def test_time_sliced_multi_gpu_nodes_are_skipped_and_say_why():
    from stacks.load import parse_stack_config
    from tests.conftest import stack_file
    raw = stack_file("dev")
    raw["vms"][0]["gpus"].append({"address": "0000:3c:00.0", "model": "L40S", "numaNode": 0})
    raw["burnIn"] = {"expectedBusbwGbps": {"L40S": 20}}
    cfg = parse_stack_config(raw, {"sshPrivateKey", "grafanaAdminPassword"}, "dev")[0]
    assert burnin.node_plans(cfg) == {}
    assert "failRequestsGreaterThanOne is true" in burnin.skipped_nodes(cfg)["gpu-dev-0"]
