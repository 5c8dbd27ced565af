"""nvidia-smi parsers on real output.

fixtures/nvidia-smi/seed001-p100-535.261.03.txt is the `nvidia-smi` table seed 001
captured on a Tesla P100 with driver 535.261.03. No real `--query-gpu` CSV has
been captured yet (no GPU machine was lent to the session that wrote this);
the CSV test below uses the documented format and is marked as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from render.nvidia_smi import parse_banner, parse_query_csv, parse_table_gpus, parse_verify_output

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
