"""Issue 29 part 3: a VM's NVSwitches against the board its GPUs sit on (config/catalog.py NVSWITCH_BOARD).

The Fabric Manager User Guide's full passthrough model (§6.1, supported VM configurations) gives each VM size
its NVSwitches: HGX A100 16/8/4/2/1 GPUs -> 12/6/3/1/0, HGX H100 (H800, H200, H20) 8/1 -> 4/0. The refusals
are rows of tests/test_bad_input.py; these are the accepted cases and the catalog's coverage.
"""

from __future__ import annotations

import copy

import pytest

from config.catalog import GPU_MODELS, NVSWITCH_BOARD, PCIE_GPUS
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import hgx_board, stack_file

SECRETS = {"sshPrivateKey", "grafanaAdminPassword"}


def _vm(gpus: list[dict], switches: list[dict]) -> dict:
    doc = copy.deepcopy(stack_file("dev"))
    doc["vms"][0]["gpus"], doc["vms"][0]["nvswitches"] = gpus, switches
    return doc


@pytest.mark.parametrize("size,switches", [(8, 6), (4, 3), (2, 1), (1, 0)])
def test_a100_partitions_of_the_guide_are_accepted(size, switches):
    gpus, nvswitches = hgx_board("A100-SXM4-80GB", switches=switches, switch_model="NVSwitch-Gen2")
    parse_stack_config(_vm(gpus[:size], nvswitches), SECRETS, "dev")


@pytest.mark.parametrize("size,switches", [(4, 2), (2, 2), (8, 4)])
def test_a100_partitions_with_other_switch_counts_are_refused(size, switches):
    gpus, nvswitches = hgx_board("A100-SXM4-80GB", switches=switches, switch_model="NVSwitch-Gen2")
    with pytest.raises(ConfigError) as e:
        parse_stack_config(_vm(gpus[:size], nvswitches), SECRETS, "dev")
    assert [i.path for i in e.value.issues] == ["vms[0].nvswitches"]
    assert f"this VM has {switches}" in e.value.issues[0].message


def test_a_whole_h100_board_without_its_nvswitches_is_refused():
    gpus, _ = hgx_board()
    with pytest.raises(ConfigError, match=r"vms\[0\].nvswitches: 8 x H100-SXM5-80GB \(vms\[0\].gpus\) on an HGX H100 8-GPU board .* get 4 NVSwitches"):
        parse_stack_config(_vm(gpus, []), SECRETS, "dev")


def test_partial_h100_boards_without_nvswitches_are_accepted():
    """The five example stacks (prod: 8 x H800 + 4 NVSwitches) stay accepted: tests/test_golden_plans.py."""
    gpus, _ = hgx_board()
    cfg, _ = parse_stack_config(_vm(gpus[:1], []), SECRETS, "dev")
    assert len(cfg.vms[0].gpus) == 1 and not cfg.vms[0].nvswitches
    cfg, _ = parse_stack_config(_vm(gpus[:4], []), SECRETS, "dev")
    assert len(cfg.vms[0].gpus) == 4


def test_every_gpu_model_has_a_board_or_is_a_pcie_card_or_is_named_unchecked():
    assert set(NVSWITCH_BOARD) | PCIE_GPUS | {"V100-SXM2-32GB"} == set(GPU_MODELS)
    assert not set(NVSWITCH_BOARD) & PCIE_GPUS
