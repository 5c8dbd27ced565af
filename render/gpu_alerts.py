"""GPU alert rules and the Grafana dashboard gpu-stack ships.

Every metric used here is switched on in render/dcgm-counters.csv (checked by
tests/test_dcgm_alerts.py), and the rules pass `promtool check rules` and
`promtool test rules` with firing and quiet cases. Series carry a `node`
label from the ServiceMonitor's relabeling (pod node name), so "GPUs missing"
can compare each node with its configured count.
"""

from __future__ import annotations

import json
from typing import Any

EXPORTER_JOBS = "nvidia-dcgm-exporter|dcgm-exporter"
TEMPERATURE_C = 85
POWER_FRACTION = 0.98


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str, labels: dict | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "alert": name,
        "expr": expr,
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {"summary": summary, "description": description},
    }
    if for_ != "0m":
        rule["for"] = for_
    return rule


def gpu_alert_groups(expected_gpus: dict[str, int]) -> list[dict[str, Any]]:
    """Rule groups (the PrometheusRule spec.groups, and a promtool rule file's groups)."""
    health = [
        _alert("GpuXidError", "max_over_time(DCGM_EXP_XID_ERRORS_COUNT[5m]) > 0", "0m", "critical",
               "GPU reported an XID error",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} reported an XID error in the last 5 minutes; see `nvidia-smi -q` and dmesg (NVRM: Xid)."),
        _alert("GpuUncorrectableEccErrors", "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m]) > 0", "0m", "critical",
               "GPU uncorrectable (double-bit) ECC errors",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} had uncorrectable ECC errors; drain the node and check row remapping."),
        _alert("GpuRowRemapFailure", "DCGM_FI_DEV_ROW_REMAP_FAILURE > 0", "0m", "critical",
               "GPU row remapping failed",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} could not remap a memory row; the GPU needs service."),
        _alert("GpuTemperatureHigh", f"DCGM_FI_DEV_GPU_TEMP > {TEMPERATURE_C}", "5m", "warning",
               "GPU temperature high",
               f"GPU {{{{ $labels.gpu }}}} on node {{{{ $labels.node }}}} has been above {TEMPERATURE_C} C for 5 minutes."),
        _alert("GpuPowerAtLimit", f"DCGM_FI_DEV_POWER_USAGE / DCGM_FI_DEV_POWER_MGMT_LIMIT > {POWER_FRACTION}", "15m", "warning",
               "GPU drawing its power limit",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} has been at its power limit for 15 minutes and is likely throttling."),
    ]
    inventory = [
        _alert("GpusMissing", f'(count(DCGM_FI_DEV_GPU_TEMP{{node="{node}"}}) or vector(0)) < {count}', "10m", "critical",
               "GPUs missing on a node",
               f"Node {node} should expose {count} GPUs, DCGM sees {{{{ $value }}}}; check `nvidia-smi -L`, the device plugin and the VM's hostdevs.",
               {"node": node})
        for node, count in sorted(expected_gpus.items())
    ]
    exporter = [
        _alert("DcgmExporterDown", f'up{{job=~"{EXPORTER_JOBS}"}} == 0', "5m", "warning",
               "dcgm-exporter target down", "Prometheus cannot scrape dcgm-exporter on {{ $labels.instance }}; GPU alerts are blind there."),
        _alert("DcgmExporterAbsent", f'absent(up{{job=~"{EXPORTER_JOBS}"}})', "10m", "critical",
               "No dcgm-exporter is scraped",
               "Prometheus has no dcgm-exporter target: check the ServiceMonitor's `release` label and that the exporter runs (seed 000)."),
    ]
    return [
        {"name": "gpu-stack.gpu-health", "rules": health},
        {"name": "gpu-stack.gpu-inventory", "rules": inventory},
        {"name": "gpu-stack.dcgm-exporter", "rules": exporter},
    ]


def prometheus_rule(ns: str, labels: dict[str, Any], expected_gpus: dict[str, int]) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "gpu-stack-gpu-alerts", "namespace": ns, "labels": labels},
            "spec": {"groups": gpu_alert_groups(expected_gpus)}}


def _panel(pid: int, title: str, expr: str, unit: str, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": "{{node}} gpu{{gpu}}"}],
    }


def grafana_dashboard() -> dict[str, Any]:
    panels = [
        _panel(1, "GPU utilization", "DCGM_FI_DEV_GPU_UTIL", "percent", 0, 0),
        _panel(2, "Framebuffer used", "DCGM_FI_DEV_FB_USED", "decmbytes", 12, 0),
        _panel(3, "Temperature", "DCGM_FI_DEV_GPU_TEMP", "celsius", 0, 8),
        _panel(4, "Power / limit", "DCGM_FI_DEV_POWER_USAGE / DCGM_FI_DEV_POWER_MGMT_LIMIT", "percentunit", 12, 8),
        _panel(5, "XID errors (5m)", "max_over_time(DCGM_EXP_XID_ERRORS_COUNT[5m])", "short", 0, 16),
        _panel(6, "Tensor pipe active", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "percentunit", 12, 16),
    ]
    return {"uid": "gpu-stack-gpus", "title": "gpu-stack / GPUs", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-6h", "to": "now"}, "tags": ["gpu-stack", "dcgm"], "panels": panels}


def dashboard_configmap(ns: str) -> dict[str, Any]:
    """Picked up by the Grafana sidecar (label grafana_dashboard=1, searchNamespace ALL)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "gpu-stack-dashboard", "namespace": ns, "labels": {"grafana_dashboard": "1"}},
            "data": {"gpu-stack-gpus.json": json.dumps(grafana_dashboard(), indent=2, sort_keys=True)}}
