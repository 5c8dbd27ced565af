"""GPU alert rules: promtool check and unit tests, and metric names from the counters we ship."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from render.gpu_alerts import gpu_alert_groups, grafana_dashboard
from render.k8s_manifests import dcgm_counters
from tests.conftest import ROOT, require_reference, require_tool

PROMTOOL_TESTS = ROOT / "tests" / "promtool" / "gpu-alerts.test.yaml"


def enabled_counters(text: str) -> set[str]:
    return {line.split(",")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def write_rules(tmp_path):
    rules = tmp_path / "gpu-alerts.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": gpu_alert_groups({"gpu-dev-0": 1, "gpu-dev-1": 2})}, sort_keys=False))
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    return rules


def test_promtool_check_rules(tmp_path):
    promtool = require_tool("promtool")
    proc = subprocess.run([promtool, "check", "rules", str(write_rules(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = sum(len(g["rules"]) for g in gpu_alert_groups({"gpu-dev-0": 1, "gpu-dev-1": 2}))
    assert f"SUCCESS: {count} rules found" in proc.stdout


def test_promtool_unit_tests_fire_and_stay_quiet(tmp_path):
    promtool = require_tool("promtool")
    write_rules(tmp_path)
    proc = subprocess.run([promtool, "test", "rules", PROMTOOL_TESTS.name], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_metric_in_rules_and_dashboard_is_in_our_counters_file():
    used = set(re.findall(r"DCGM_\w+", yaml.safe_dump(gpu_alert_groups({"n": 1})) + str(grafana_dashboard())))
    assert used, "the rules use DCGM metrics"
    missing = used - enabled_counters(dcgm_counters())
    assert not missing, f"not exported by render/dcgm-counters.csv: {sorted(missing)}"


def test_our_counters_keep_every_upstream_default():
    upstream = enabled_counters(require_reference("dcgm-exporter-4.5.3-4.8.2.default-counters.csv").read_text())
    ours = enabled_counters(dcgm_counters())
    assert upstream <= ours
    assert {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_EXP_XID_ERRORS_COUNT"} <= ours - upstream
