"""Versions: the README's table and the defaults agree, no example stack or default is past its end of support
(unless the stack says why), and `make plan` writes versions.json relative to the catalog's read date."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from hypervisors.kubevirt.render import KUBEVIRT_VERSION
from config import support
from config.models import Addons, ContainerRuntime
from tests.conftest import ROOT, stack_file

EXAMPLES = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml") if p.name != "Pulumi.yaml")


def readme_versions() -> dict[str, tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- versions:begin -->", 1)[1].split("<!-- versions:end -->", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    return {r[0]: (r[1], r[2]) for r in rows}


def _examples(key: str, field: str) -> dict[str, str]:
    out = {}
    for s in EXAMPLES:
        raw = stack_file(s)
        node = raw.get(key.split(".")[0])
        for part in key.split(".")[1:]:
            node = (node or {}).get(part)
        if node and field in node:
            out[s] = str(node[field])
    return out


def test_readme_table_matches_the_defaults():
    t = readme_versions()
    a = Addons()
    assert t["nvidia-container-toolkit"][0] == ContainerRuntime().nvidia_toolkit_version
    assert t["KubeVirt"][0] == KUBEVIRT_VERSION
    assert t["Calico (tigera-operator)"][0] == a.pod_network.version
    assert t["NVIDIA device plugin"][0] == a.device_plugin.version
    assert t["NVIDIA GPU Operator"][0] == a.gpu_operator.version
    assert a.gpu_operator.dcgm_exporter_version.startswith(t["dcgm-exporter"][0] + "-")
    assert a.monitoring.dcgm_exporter_image_tag.startswith(t["dcgm-exporter"][0] + "-")
    assert t["kube-prometheus-stack"][0] == a.monitoring.chart_version


def test_readme_table_matches_the_example_stacks():
    t = readme_versions()
    for row, (key, field) in {"Kubernetes": ("kubernetes", "version"), "NVIDIA driver": ("guest.nvidia", "driverVersion")}.items():
        pins = _examples(key, field)
        common = {v for s, v in pins.items() if s != "esxi"}
        assert common == {t[row][0]}, (row, pins)
        assert f"esxi: {pins['esxi']}" in t[row][1] or pins["esxi"] == t[row][0], (row, pins)
    toolkit = _examples("guest.containerRuntime", "nvidiaToolkitVersion")
    assert set(toolkit.values()) <= {t["nvidia-container-toolkit"][0]}, toolkit


@pytest.mark.parametrize("stack", EXAMPLES)
def test_no_example_stack_is_past_its_end_of_support(stack):
    """Relative to the catalog's read date; an ended Kubernetes only with kubernetes.pastEndOfSupport (the esxi seed)."""
    raw = stack_file(stack)
    k8s = raw.get("kubernetes")
    if k8s:
        status = support.kubernetes_status(str(k8s["version"]), support.CATALOG_READ)
        assert status.state != "unknown", k8s["version"]
        if status.state == "ended":
            assert k8s.get("pastEndOfSupport"), f"{stack}: Kubernetes {k8s['version']} ended {status.text}; pin a supported minor or declare why"
    guest = raw.get("guest")
    if guest:
        version = str(guest["nvidia"]["driverVersion"])
        assert support.driver_status(version, support.CATALOG_READ).state in ("supported",), (stack, version)


def test_only_the_esxi_seed_declares_an_ended_kubernetes():
    declared = {s for s in EXAMPLES if (stack_file(s).get("kubernetes") or {}).get("pastEndOfSupport")}
    assert declared == {"esxi"}


def test_plan_writes_versions_json(tmp_path):
    for stack in ("dev", "esxi"):
        proc = subprocess.run([sys.executable, "-m", "tools.plan", stack, "--out", str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    dev = json.loads((tmp_path / "dev" / "versions.json").read_text())
    assert dev["catalogRead"] == support.CATALOG_READ.isoformat()
    rows = {r["component"]: r for r in dev["components"]}
    raw = stack_file("dev")
    assert rows["kubernetes"]["version"] == str(raw["kubernetes"]["version"])
    assert rows["nvidia-driver"]["version"] == str(raw["guest"]["nvidia"]["driverVersion"])
    assert {"kubernetes", "nvidia-driver", "nvidia-container-toolkit", "device-plugin", "kube-prometheus-stack",
            "dcgm-exporter", "calico"} <= set(rows)
    assert all(r["support"] in ("supported", "ending", "ended", "unknown", "no end-of-support data") for r in rows.values())
    esxi = {r["component"]: r for r in json.loads((tmp_path / "esxi" / "versions.json").read_text())["components"]}
    assert esxi["kubernetes"]["support"] == "ended" and esxi["kubernetes"]["ends"] == "2023-02-28"
    assert "1.23.17" in esxi["kubernetes"]["pastEndOfSupport"]


def test_versions_json_does_not_follow_the_calendar(monkeypatch):
    """The same config gives the same versions.json on any day: statuses are relative to CATALOG_READ."""
    from datetime import date

    import config.support as s
    from stacks.load import parse_stack_config
    from tools.plan import versions_json

    cfg, _ = parse_stack_config(stack_file("dev"), {"sshPrivateKey", "grafanaAdminPassword"})
    before = versions_json(cfg)

    class Later(date):
        @classmethod
        def today(cls):
            return cls(2031, 1, 1)

    monkeypatch.setattr(s, "date", Later)
    assert versions_json(cfg) == before
    assert re.search(r'"catalogRead": "\d{4}-\d{2}-\d{2}"', before)


def test_plan_says_which_exporter_the_metric_names_were_checked_against(tmp_path):
    from render import dcgm_metrics

    proc = subprocess.run([sys.executable, "-m", "tools.plan", "dev", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {r["component"]: r for r in json.loads((tmp_path / "dev" / "versions.json").read_text())["components"]}
    names = rows["dcgm-exporter"]["metricNames"]
    assert names == {"checkedAgainst": dcgm_metrics.CHECKED_EXPORTER, "countersFile": "render/dcgm-counters.csv",
                     "runsChecked": True, "renames": []}
    line = next(line for line in proc.stdout.splitlines() if "dcgm metric names" in line)
    newest = support.NEWEST["dcgm-exporter"]
    assert f"checked against dcgm-exporter {dcgm_metrics.CHECKED_EXPORTER}'s default counters" in line
    assert f"{newest.version} ({newest.source}) {newest.note}" in line and newest.note.startswith("not yet verified")
    assert "NOT checked" not in line


def test_plan_says_when_the_stack_runs_an_exporter_the_names_were_not_checked_against():
    from stacks.load import parse_stack_config
    from tools.plan import metric_names_lines, pinned_versions_doc

    raw = stack_file("dev")
    raw["addons"].setdefault("monitoring", {})["dcgmExporterImageTag"] = "4.6.0-4.8.3-ubuntu22.04"
    cfg, _ = parse_stack_config(raw, {"sshPrivateKey", "grafanaAdminPassword"})
    doc = pinned_versions_doc(cfg)
    row = next(r for r in doc["components"] if r["component"] == "dcgm-exporter")
    assert row["version"] == "4.6.0-4.8.3-ubuntu22.04" and row["metricNames"]["runsChecked"] is False
    [line] = metric_names_lines(doc)
    assert "this stack runs 4.6.0-4.8.3-ubuntu22.04, whose counters are NOT checked" in line
