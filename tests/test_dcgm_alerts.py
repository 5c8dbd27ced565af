"""GPU alert rules: promtool check and unit tests, and metric names from the counters we ship."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess

import pytest
import yaml

from render import dcgm_metrics
from render.drift_check import drift_alert_group
from render.gpu_alerts import dashboard_configmap, gpu_alert_groups, prometheus_rule
from render.k8s_manifests import dcgm_counters
from config.models import Addons
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


# --- metric names: what the rendered rules and panels use, against the counters file -------------------------

_PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_PROMQL_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
                    "inf", "nan", "atan2"}
DCGM_FAMILY = "DCGM_"
"""dcgm-exporter's metrics are named after the counters file's first column (render/dcgm_metrics.py), and every DCGM
field is DCGM_FI_* or the exporter's own DCGM_EXP_*: a name with this prefix must be enabled in the counters file."""
NOT_DCGM = {
    "up": "Prometheus itself, for every scrape target (Prometheus docs, Jobs and instances: automatically generated "
          "labels and time series)",
    "kube_node_labels": "kube-state-metrics (kube-prometheus-stack's subchart), node labels allowed by metricLabelsAllowlist "
                        "(render/helm_values.py monitoring_values; docs/SOURCES.md, Burn-in metric)",
    "gpu_stack_node_drift": "gpu-stack's drift check DaemonSet (render/drift-check.sh writes it, its PodMonitor scrapes it; "
                            "render/drift_check.py)",
}
"""Metrics the rules and panels read that no counters file holds: each made by another exporter, with where it comes from.
Our own recording rules' series are not listed: they must be recorded by a rule in the same artifacts."""


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not a function call, keyword, label or duration."""
    text = _PROMQL_STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)                 # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                # ranges and subqueries
    text = _PROMQL_GROUPING.sub("", text)                   # by (...), on(), ignoring(...), group_left(...)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        if m.group(2) is None and m.group(1).lower() not in _PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def artifact_metrics(rule: dict, dashboard_cm: dict) -> dict[str, set[str]]:
    """Every metric each alert, recording rule and dashboard panel of the rendered objects uses, by where it is used."""
    used: dict[str, set[str]] = {}
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            where = f"{group['name']} {'alert ' + r['alert'] if 'alert' in r else 'record ' + r['record']}"
            used[where] = promql_metrics(str(r["expr"]))
    for name, text in dashboard_cm["data"].items():
        for panel in json.loads(text)["panels"]:
            for target in panel.get("targets", []):
                used[f"dashboard {name} panel {panel['title']} {target['refId']}"] = promql_metrics(target["expr"])
    return used


def recorded_series(rule: dict) -> set[str]:
    """The series the PrometheusRule's own recording rules make."""
    return {r["record"] for group in rule["spec"]["groups"] for r in group["rules"] if "record" in r}


def not_enabled(used: dict[str, set[str]], enabled: set[str], renames=(), recorded=frozenset()) -> dict[str, list[str]]:
    """Metrics no source makes, per use. A DCGM field (DCGM_*) counts only when the counters file enables it (a rename's
    other name counts when one of the pair is enabled); any other name only when a recording rule of the same
    artifacts records it (`recorded`) or NOT_DCGM names the exporter that makes it."""
    dcgm = set(enabled)
    for r in renames:
        if r.old in enabled or r.new in enabled:
            dcgm |= {r.old, r.new}

    def made(name: str) -> bool:
        if name.startswith(DCGM_FAMILY):
            return name in dcgm
        return name in recorded or name in NOT_DCGM

    return {where: sorted(n for n in names if not made(n)) for where, names in used.items() if not all(made(n) for n in names)}


def rendered(metrics=dcgm_metrics.METRICS):
    """The PrometheusRule (with the drift check's group, stacks/addons.py) and the dashboard ConfigMap exactly as the
    components apply them."""
    return (prometheus_rule("monitoring", {"release": "kube-prometheus-stack"}, {"gpu-dev-0": 1, "gpu-dev-1": 2}, ("gpu-dev-1",),
                            metrics=metrics, extra_groups=(drift_alert_group(),)),
            dashboard_configmap("monitoring", metrics=metrics))


def test_every_metric_of_every_alert_recording_rule_and_panel_is_enabled_in_the_counters_file():
    rule, cm = rendered()
    used = artifact_metrics(rule, cm)
    assert any(w.startswith("dashboard") for w in used) and any(" alert " in w for w in used)
    assert {"DCGM_FI_DEV_FB_USED", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_DEV_FABRIC_MANAGER_STATUS"} <= set().union(*used.values())
    assert {"kube_node_labels", "gpu_stack_burnin_failed", "gpu_stack_node_drift"} <= set().union(*used.values())  # the other families
    assert not not_enabled(used, enabled_counters(dcgm_counters()), dcgm_metrics.RENAMES, recorded_series(rule))


def test_every_field_the_counters_file_enables_is_in_the_dcgm_family():
    """What makes the prefix rule sound: the exporter's metric names are the counters file's fields, all DCGM_*; and no
    name in the table of other exporters' metrics or among our recorded series could be mistaken for one."""
    rule, _ = rendered()
    assert all(f.startswith(DCGM_FAMILY) for f in enabled_counters(dcgm_counters()))
    assert not any(n.startswith(DCGM_FAMILY) for n in (*NOT_DCGM, *recorded_series(rule)))


def test_the_check_names_a_recording_rule_or_panel_that_uses_a_metric_the_counters_file_does_not_enable():
    rule, cm = rendered()
    rule["spec"]["groups"].append({"name": "gpu-stack.recorded", "rules": [
        {"record": "gpu:retired_pages:sum", "expr": 'sum by (node) (DCGM_FI_DEV_RETIRED_DBE{job="dcgm-exporter"})'}]})
    dash = json.loads(cm["data"]["gpu-stack-gpus.json"])
    dash["panels"].append({"title": "SM occupancy", "targets": [{"refId": "A", "expr": "avg by (gpu) (rate(DCGM_FI_PROF_SM_OCCUPANCY[5m]))"}]})
    cm["data"]["gpu-stack-gpus.json"] = json.dumps(dash)
    missing = not_enabled(artifact_metrics(rule, cm), enabled_counters(dcgm_counters()), recorded=recorded_series(rule))
    assert missing == {"gpu-stack.recorded record gpu:retired_pages:sum": ["DCGM_FI_DEV_RETIRED_DBE"],
                       "dashboard gpu-stack-gpus.json panel SM occupancy A": ["DCGM_FI_PROF_SM_OCCUPANCY"]}


def test_the_check_names_a_series_no_rule_records_and_another_exporters_metric_not_in_the_table():
    """Only a DCGM field is looked up in the counters file; a series a rule of ours would record must be recorded in the
    same artifacts (here the burn-in rule is dropped), and any other metric must be in NOT_DCGM with its exporter."""
    rule, cm = rendered()
    for group in rule["spec"]["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("record") != "gpu_stack_burnin_failed"]
    rule["spec"]["groups"].append({"name": "gpu-stack.other", "rules": [
        {"alert": "NodeDown", "expr": 'node_uname_info == 0 or DCGM_FI_DEV_GPU_TEMP > 90'}]})
    missing = not_enabled(artifact_metrics(rule, cm), enabled_counters(dcgm_counters()), recorded=recorded_series(rule))
    assert missing == {"gpu-stack.burn-in alert GpuNodeBurnInFailed": ["gpu_stack_burnin_failed"],
                       "gpu-stack.other alert NodeDown": ["node_uname_info"]}


def test_promql_metrics_reads_names_not_functions_labels_or_keywords():
    expr = ('count_over_time((DCGM_FI_DEV_XID_ERRORS == 79)[10m:1m]) > 0 or max_over_time(A_B{xid="79", x=~"a|b"}[10m]) > 0 '
            'unless on(node) absent(up{job="x"}) and count by (gpu) (C) / ignoring(pod) D offset 5m')
    assert promql_metrics(expr) == {"DCGM_FI_DEV_XID_ERRORS", "A_B", "up", "C", "D"}


def test_the_renderers_refuse_a_counters_file_without_a_field_they_use():
    counters = {f: t for f, t in dcgm_metrics.enabled_fields(dcgm_counters()).items() if f != "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"}
    with pytest.raises(dcgm_metrics.UnknownMetric, match="does not enable DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"):
        dcgm_metrics.Metrics(counters)


def test_the_used_fields_are_exactly_the_ones_the_rendered_artifacts_use():
    """USED holds no stale row: each field it lists reaches an alert or a panel, and nothing reaches them around it.
    USED is DCGM fields only; the other names the artifacts read are our recorded series and NOT_DCGM, no stale row there either."""
    rule, cm = rendered()
    used = set().union(*artifact_metrics(rule, cm).values())
    assert {n for n in used if n.startswith(DCGM_FAMILY)} == set(dcgm_metrics.USED.values())
    assert {n for n in used if not n.startswith(DCGM_FAMILY)} == set(NOT_DCGM) | recorded_series(rule)


def test_no_rule_or_panel_reads_the_hostname_label_that_dcgm_exporter_renamed():
    """dcgm-exporter's main branch after 4.5.3-4.8.2 renamed the `Hostname` label to `hostname` (#655, commit d5e5f51):
    our rules and panels group by `node` (the ServiceMonitor's relabeling) and must not read either."""
    rule, cm = rendered()
    text = json.dumps(rule) + json.dumps(cm)
    assert not re.search(r"\b[Hh]ostname\b", text)


def test_checked_exporter_is_the_one_the_defaults_run_and_the_reference_file_is_from():
    a = Addons()
    assert a.gpu_operator.dcgm_exporter_version.startswith(dcgm_metrics.CHECKED_EXPORTER + "-")
    assert a.monitoring.dcgm_exporter_image_tag.startswith(dcgm_metrics.CHECKED_EXPORTER + "-")
    require_reference(f"dcgm-exporter-{dcgm_metrics.CHECKED_EXPORTER}.default-counters.csv")
    assert f"dcgm-exporter {dcgm_metrics.CHECKED_EXPORTER}" in dcgm_counters().split("\n# Format", 1)[0]


def _code_strings(path) -> list[tuple[int, str]]:
    """String constants of a module that are code, not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_checked_exporter_is_spelled_once_on_the_ground_floor():
    """One source of truth: config/support.py CHECKED_DCGM_EXPORTER; the defaults, the support catalog's NEWEST note
    and render/dcgm_metrics.py read it (config/ may not import render/, tests/test_house.py)."""
    from config import support
    assert dcgm_metrics.CHECKED_EXPORTER is support.CHECKED_DCGM_EXPORTER
    spelled = [f"{path.relative_to(ROOT)}:{line}" for folder in ("config", "render", "hypervisors", "stacks", "components", "tools")
               for path in sorted((ROOT / folder).rglob("*.py"))
               for line, text in _code_strings(path)
               if support.CHECKED_DCGM_EXPORTER in text.replace(f"for example {support.CHECKED_DCGM_EXPORTER}", "")]  # a form's example
    assert len(spelled) == 1 and spelled[0].startswith("config/support.py:"), spelled
    assert support.CHECKED_DCGM_EXPORTER in support.NEWEST["dcgm-exporter"].note

# --- rename fallbacks (render/dcgm_metrics.py RENAMES is empty: these renames are made up for the test) ------

TEST_RENAMED = ("gpu_temp", "ecc_dbe_volatile", "fb_used", "fabric_status", "xid_last", "xid_count")
RENAMED_TESTS = ROOT / "tests" / "promtool" / "gpu-alerts-renamed.test.yaml"


def test_renames() -> tuple[dcgm_metrics.Rename, ...]:
    return tuple(dcgm_metrics.Rename(old=dcgm_metrics.USED[k], new=dcgm_metrics.USED[k] + "_RENAMED", release="test",
                                     source="tests/test_dcgm_alerts.py (not a real rename)") for k in TEST_RENAMED)


test_renames.__test__ = False  # a helper, not a test


def test_a_renamed_field_is_rendered_with_both_names_the_newest_first():
    m = dcgm_metrics.Metrics.from_file(renames=test_renames())
    assert m.v("gpu_temp") == "(DCGM_FI_DEV_GPU_TEMP_RENAMED or DCGM_FI_DEV_GPU_TEMP)"
    assert m.over("increase", "ecc_dbe_volatile", "10m", 'node="a"') == (
        '(increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL_RENAMED{node="a"}[10m]) or increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{node="a"}[10m]))')
    assert m.absent("fabric_status") == "(absent(DCGM_FI_DEV_FABRIC_MANAGER_STATUS_RENAMED) and absent(DCGM_FI_DEV_FABRIC_MANAGER_STATUS))"
    assert m.v("power_usage") == "DCGM_FI_DEV_POWER_USAGE"
    chain = (dcgm_metrics.Rename("DCGM_FI_DEV_GPU_TEMP", "B", "x", "t"), dcgm_metrics.Rename("B", "C", "y", "t"))
    assert dcgm_metrics.Metrics.from_file(renames=chain).names("gpu_temp") == ("C", "B", "DCGM_FI_DEV_GPU_TEMP")
    # after a bump our counters file names the new field; an exporter not yet upgraded still sends the old one
    bumped = {**{f: t for f, t in dcgm_metrics.enabled_fields(dcgm_counters()).items() if f != "DCGM_FI_DEV_GPU_TEMP"},
              "DCGM_FI_DEV_GPU_TEMP_RENAMED": "gauge"}
    after = dcgm_metrics.Metrics(bumped, test_renames(), {**dcgm_metrics.USED, "gpu_temp": "DCGM_FI_DEV_GPU_TEMP_RENAMED"})
    assert after.v("gpu_temp") == m.v("gpu_temp")
    rule, cm = rendered(m)
    used = artifact_metrics(rule, cm)
    assert "DCGM_FI_DEV_GPU_TEMP_RENAMED" in used["dashboard gpu-stack-gpus.json panel Temperature A"]
    assert not not_enabled(used, enabled_counters(dcgm_counters()), m.renames, recorded_series(rule))


def test_promtool_rename_fallbacks_fire_on_old_names_new_names_and_both(tmp_path):
    promtool = require_tool("promtool")
    groups = gpu_alert_groups({"gpu-dev-0": 1, "gpu-dev-1": 2}, ("gpu-dev-1",), dcgm_metrics.Metrics.from_file(renames=test_renames()))
    rules = tmp_path / "gpu-alerts-renamed.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(RENAMED_TESTS, tmp_path / RENAMED_TESTS.name)
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.run([promtool, "test", "rules", RENAMED_TESTS.name], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert "_RENAMED" in rules.read_text()


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
