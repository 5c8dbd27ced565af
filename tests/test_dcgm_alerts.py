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
    rules.write_text(yaml.safe_dump({"groups": gpu_alert_groups({"gpu-dev-0": 1, "gpu-dev-1": 2}, ("gpu-dev-1",))}, sort_keys=False))
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    return rules


def test_promtool_check_rules(tmp_path):
    promtool = require_tool("promtool")
    proc = subprocess.run([promtool, "check", "rules", str(write_rules(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = sum(len(g["rules"]) for g in gpu_alert_groups({"gpu-dev-0": 1, "gpu-dev-1": 2}, ("gpu-dev-1",)))
    assert f"SUCCESS: {count} rules found" in proc.stdout


def test_promtool_unit_tests_fire_and_stay_quiet(tmp_path):
    promtool = require_tool("promtool")
    write_rules(tmp_path)
    proc = subprocess.run([promtool, "test", "rules", PROMTOOL_TESTS.name], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_metric_in_rules_and_dashboard_is_in_our_counters_file():
    used = set(re.findall(r"DCGM_\w+", yaml.safe_dump(gpu_alert_groups({"n": 1}, ("n",))) + str(grafana_dashboard())))
    assert used, "the rules use DCGM metrics"
    missing = used - enabled_counters(dcgm_counters())
    assert not missing, f"not exported by render/dcgm-counters.csv: {sorted(missing)}"


def test_our_counters_keep_every_upstream_default():
    upstream = enabled_counters(require_reference("dcgm-exporter-4.5.3-4.8.2.default-counters.csv").read_text())
    ours = enabled_counters(dcgm_counters())
    assert upstream <= ours
    assert {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_EXP_XID_ERRORS_COUNT"} <= ours - upstream


# --- the rules on real dcgm-exporter scrapes (fixtures/dcgm-exporter, PROVENANCE.md there) ----------------

SCRAPES = ROOT / "tests" / "fixtures" / "dcgm-exporter"
# node name we give each scrape (the ServiceMonitor adds `node`), its GPU count, whether it has NVSwitches
REAL_NODES = {
    "dcgm-exporter-metrics.1xL40S-VM-upcloud.595.58.03.prom": ("l40s", 1, False),
    "dcgm-exporter-metrics.1xL4-AWS-kops.580.105.08.prom": ("l4", 1, False),
    "dcgm-exporter-metrics.GRID-A100-40C-vGPU-vks.580.126.09.prom": ("vgpu", 1, False),
    "dcgm-exporter-metrics.8xA800-SXM4-80GB-MIG.535.129.03.EXCERPT.prom": ("a800", 8, True),
}
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<labels>\{.*\})?\s+(?P<value>\S+)\s*$")


def scrape_series(path, node: str) -> list[dict]:
    """Each sample of a real scrape as a promtool input series, with the `node` label our relabeling adds."""
    out = []
    for line in path.read_text().splitlines():
        m = _SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = m.group("labels") or "{}"
        labels = labels[:-1] + ("," if labels != "{}" else "") + f'node="{node}"}}'
        out.append({"series": m.group("name") + labels, "values": f"{format(float(m.group('value')), 'f')}x30"})
    return out


def test_real_scrapes_have_the_gaps_the_rules_must_survive():
    def families(name):
        return {s["series"].split("{")[0] for s in scrape_series(SCRAPES / name, "n")}
    assert "DCGM_FI_DEV_XID_ERRORS" not in families("dcgm-exporter-metrics.1xL40S-VM-upcloud.595.58.03.prom")
    assert "DCGM_FI_DEV_XID_ERRORS" not in families("dcgm-exporter-metrics.1xL4-AWS-kops.580.105.08.prom")
    assert "DCGM_FI_DEV_GPU_TEMP" not in families("dcgm-exporter-metrics.GRID-A100-40C-vGPU-vks.580.126.09.prom")
    mig = scrape_series(SCRAPES / "dcgm-exporter-metrics.8xA800-SXM4-80GB-MIG.535.129.03.EXCERPT.prom", "n")
    remap_gpus = {re.search(r'gpu="(\d+)"', s["series"]).group(1) for s in mig if "ROW_REMAP_FAILURE" in s["series"]}
    assert "0" not in remap_gpus and len(remap_gpus) == 7  # no row-remap series for the MIG GPU
    assert not any("FABRIC_MANAGER" in s["series"] for s in mig)


def test_rules_stay_quiet_on_real_healthy_scrapes_and_see_missing_fabric_status(tmp_path):
    promtool = require_tool("promtool")
    expected = {node: n for node, n, _ in REAL_NODES.values()}
    fabric = tuple(node for node, _, nvswitch in REAL_NODES.values() if nvswitch)
    groups = gpu_alert_groups(expected, fabric)
    (tmp_path / "real.rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    series = [s for name, (node, _, _) in REAL_NODES.items() for s in scrape_series(SCRAPES / name, node)]
    series.append({"series": 'up{job="dcgm-exporter", instance="10.0.0.9:9400"}', "values": "1x30"})
    names = sorted({r["alert"] for g in groups for r in g["rules"] if "alert" in r})  # the burn-in group also records a series
    quiet = [{"eval_time": "20m", "alertname": a, "exp_alerts": []} for a in names if a != "GpuFabricStatusAbsent"]
    # The 535-era A800 scrape has no fabric status series: the only alert a real healthy scrape raises.
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "GpuFabricStatusAbsent")
    absent = {"eval_time": "20m", "alertname": "GpuFabricStatusAbsent", "exp_alerts": [{
        "exp_labels": {"severity": "warning", "node": "a800"}, "exp_annotations": rule["annotations"]}]}
    test = {"rule_files": ["real.rules.yaml"], "evaluation_interval": "1m",
            "tests": [{"name": "real scrapes", "interval": "1m", "input_series": series, "alert_rule_test": quiet + [absent]}]}
    (tmp_path / "real.test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", "real.test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(series) > 80 and {"GpusMissing", "GpuFellOffTheBus", "GpuRowRemapFailure", "GpuFabricNotCompleted"} <= set(names)
