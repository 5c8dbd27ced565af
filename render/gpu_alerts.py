"""GPU alert rules and the Grafana dashboard gpu-stack ships.

Every metric name comes from render/dcgm_metrics.py: its USED table, checked
against render/dcgm-counters.csv (the file the exporter runs with, whose first
column names the metrics) when it is built, with an `or` fallback for each known
rename; tests/test_dcgm_alerts.py checks the rendered rules and panels again. The
rules pass `promtool check rules` and
`promtool test rules` with firing and quiet cases. Series carry a `node`
label from the ServiceMonitor's relabeling (pod node name), so "GPUs missing"
can compare each node with its configured count.

Real exporters drop series rather than report 0 (dcgm-exporter skips blank
values: XID_ERRORS is absent on the L40S and L4 scrapes, row remapping on MIG
GPUs, temperature on vGPU; tests/fixtures/dcgm-exporter/). So every rule
either compares a series that exists (and is then quiet when it does not), or
counts with `or vector(0)`, or watches for the series itself with `absent()`,
and GPUs are counted on the framebuffer series, which every scrape has.

Fabric-aware rules (nodes with NVSwitches): DCGM_FI_DEV_FABRIC_MANAGER_STATUS
is dcgmFabricManagerStatus_t (0 NotSupported, 1 NotStarted, 2 InProgress,
3 Success, 4 Failure, 5 Unrecognized, 6 NvmlTooOld), field 170 in go-dcgm at
the commit dcgm-exporter 4.5.3-4.8.2 pins; DCGM_FI_DEV_FABRIC_MANAGER_ERROR_CODE
(171) is only set once Fabric Manager finished starting.
"""

from __future__ import annotations

import json
from typing import Any

from render.dcgm_metrics import METRICS, Metrics

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


FABRIC_STATUS_FAILURE = 4
FABRIC_STATUS_SUCCESS = 3
XID_FALLEN_OFF_THE_BUS = 79
NVLINK_ERROR_COUNTERS = ("nvlink_crc_flit_errors", "nvlink_crc_data_errors", "nvlink_replay_errors", "nvlink_recovery_errors")


XID_79 = f'xid="{XID_FALLEN_OFF_THE_BUS}"'


def _node(node: str) -> str:
    return f'node="{node}"'


def _gpu_count(node: str, m: Metrics) -> str:
    """Distinct GPUs DCGM reports on a node: MIG instances share their GPU's `gpu` label; 0 when none."""
    return f'(count(count by (gpu) ({m.v("fb_used", _node(node))})) or vector(0))'


def _fabric_rules(nodes: list[str], m: Metrics) -> list[dict[str, Any]]:
    sel = f'node=~"{"|".join(nodes)}"'
    rules = [
        _alert("GpuFabricManagerFailure", f"{m.v('fabric_status', sel)} == {FABRIC_STATUS_FAILURE}", "0m", "critical",
               "Fabric Manager failed to train the NVSwitch fabric",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }}: Fabric Manager status Failure; CUDA fails with error 802. "
               "Run `gpu-stack doctor`; in the guest `systemctl status nvidia-fabricmanager` and `nvidia-smi -q` (Fabric)."),
        _alert("GpuFabricNotCompleted", f"{m.v('fabric_status', sel)} > 0 < {FABRIC_STATUS_SUCCESS}", "10m", "critical",
               "NVSwitch fabric not trained",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }}: fabric state not completed for 10 minutes (status {{ $value }}: "
               "1 not started, 2 in progress); Fabric Manager is down or not all NVSwitches are passed through. "
               "`sudo systemctl enable --now nvidia-fabricmanager` in the guest."),
        _alert("GpuFabricManagerError", f"{m.v('fabric_error', sel)} > 0", "0m", "critical",
               "Fabric Manager reports an error",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }}: Fabric Manager error code {{ $value }}; see `journalctl -u nvidia-fabricmanager`."),
    ]
    for node in nodes:
        rules.append(_alert(
            "GpuFabricStatusAbsent",
            f'{m.absent("fabric_status", _node(node))} unless on() {m.absent("fb_used", _node(node))}', "15m", "warning",
            "Fabric Manager status not exported",
            f"Node {node} has NVSwitches and DCGM exports its GPUs but not {m.field('fabric_status')}; the fabric alerts are blind "
            "there: check the exporter's counters file (render/dcgm-counters.csv).",
            {"node": node}))
    return rules


def gpu_alert_groups(expected_gpus: dict[str, int], fabric_nodes: tuple[str, ...] | list[str] = (),
                     metrics: Metrics = METRICS) -> list[dict[str, Any]]:
    """Rule groups (the PrometheusRule spec.groups, and a promtool rule file's groups).

    `fabric_nodes`: the nodes whose VM has NVSwitches, watched for Fabric Manager and fabric state.
    `metrics`: the metric names (render/dcgm_metrics.py; a test passes other renames).
    """
    m = metrics
    health = [
        _alert("GpuXidError", f"{m.over('max_over_time', 'xid_count', '5m')} > 0", "0m", "critical",
               "GPU reported an XID error",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} reported an XID error in the last 5 minutes; see `nvidia-smi -q` and dmesg (NVRM: Xid)."),
        _alert("GpuUncorrectableEccErrors", f"{m.over('increase', 'ecc_dbe_volatile', '10m')} > 0", "0m", "critical",
               "GPU uncorrectable (double-bit) ECC errors",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} had uncorrectable ECC errors; drain the node and check row remapping."),
        _alert("GpuRowRemapFailure", f"{m.v('row_remap_failure')} > 0", "0m", "critical",
               "GPU row remapping failed",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} could not remap a memory row; the GPU needs service."),
        _alert("GpuTemperatureHigh", f"{m.v('gpu_temp')} > {TEMPERATURE_C}", "5m", "warning",
               "GPU temperature high",
               f"GPU {{{{ $labels.gpu }}}} on node {{{{ $labels.node }}}} has been above {TEMPERATURE_C} C for 5 minutes."),
        _alert("GpuFellOffTheBus",
               f'count_over_time(({m.v("xid_last")} == {XID_FALLEN_OFF_THE_BUS})[10m:1m]) > 0 '
               f'or {m.over("max_over_time", "xid_count", "10m", XID_79)} > 0', "0m", "critical",
               "GPU has fallen off the bus (Xid 79)",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} reported Xid 79: the PCIe link is gone. Drain the node, reboot the VM "
               "(and the host if the GPU stays lost), check power and seating; `gpu-stack doctor` lists the Xid lines."),
        _alert("GpuNvlinkErrors", " or ".join(f"{m.over('increase', key, '10m')} > 0" for key in NVLINK_ERROR_COUNTERS), "0m", "warning",
               "NVLink error counters rising",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }}: NVLink CRC, replay or recovery errors in the last 10 minutes; "
               "check `nvidia-smi nvlink -s` and `nvidia-smi nvlink -e`; reset the GPU if they keep rising."),
        _alert("GpuPowerAtLimit", f"{m.v('power_usage')} / {m.v('power_limit')} > {POWER_FRACTION}", "15m", "warning",
               "GPU drawing its power limit",
               "GPU {{ $labels.gpu }} on node {{ $labels.node }} has been at its power limit for 15 minutes and is likely throttling."),
    ]
    inventory = [
        _alert("GpusMissing", f"{_gpu_count(node, m)} < {count}", "10m", "critical",
               "GPUs missing on a node",
               f"Node {node} should expose {count} GPUs, DCGM sees {{{{ $value }}}}; a GPU fell off the bus (Xid 79) or was not passed through: "
               "check `nvidia-smi -L`, dmesg, the device plugin and the VM's hostdevs (`gpu-stack doctor`).",
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
    groups = [
        {"name": "gpu-stack.gpu-health", "rules": health},
        {"name": "gpu-stack.gpu-inventory", "rules": inventory},
    ]
    if fabric_nodes:
        groups.append({"name": "gpu-stack.gpu-fabric", "rules": _fabric_rules(sorted(fabric_nodes), m)})
    groups.append({"name": "gpu-stack.dcgm-exporter", "rules": exporter})
    groups.append({"name": "gpu-stack.burn-in", "rules": burnin_rules()})
    return groups


BURNIN_LABEL = "label_gpu_stack_io_burn_in"
"""kube-state-metrics' name for the node label gpu-stack.io/burn-in in kube_node_labels: the prefix label_ and
every character outside [a-zA-Z0-9_] replaced by _ (kube-state-metrics KubeLabelsToPrometheusLabels / SanitizeLabelName)."""


def burnin_rules() -> list[dict[str, Any]]:
    """Issue 27: gpu_stack_burnin_failed{node} (1 while a node's last burn-in failed, 0 after one passed; no series
    before the first) and an alert on it. The gate (scripts/guest/burn-in.sh) labels the node, kube-state-metrics
    exports the label (render/helm_values.monitoring_values allows it)."""
    return [
        {"record": "gpu_stack_burnin_failed",
         "expr": f'max by (node) (kube_node_labels{{{BURNIN_LABEL}="failed"}}) or max by (node) (0 * kube_node_labels{{{BURNIN_LABEL}="passed"}})'},
        _alert("GpuNodeBurnInFailed", "gpu_stack_burnin_failed == 1", "0m", "critical",
               "GPU node {{ $labels.node }} failed its burn-in and stays cordoned",
               "The burn-in gate (DCGM diagnostics, NCCL all-reduce, P2P) failed on {{ $labels.node }}; the node stays cordoned. "
               "The deployment's error names the GPU or link, the test and what diagnoses it; `gpu-stack doctor` keeps the "
               "burn-in output in its evidence bundle (docs/OPERATIONS.md, Burn-in)."),
    ]


def prometheus_rule(ns: str, labels: dict[str, Any], expected_gpus: dict[str, int], fabric_nodes: tuple[str, ...] = (),
                    metrics: Metrics = METRICS, extra_groups: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """extra_groups: render/drift_check.drift_alert_group where the drift check is on."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "gpu-stack-gpu-alerts", "namespace": ns, "labels": labels},
            "spec": {"groups": [*gpu_alert_groups(expected_gpus, fabric_nodes, metrics), *extra_groups]}}


def _panel(pid: int, title: str, expr: str, unit: str, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": "{{node}} gpu{{gpu}}"}],
    }


def grafana_dashboard(metrics: Metrics = METRICS) -> dict[str, Any]:
    m = metrics
    panels = [
        _panel(1, "GPU utilization", m.v("gpu_util"), "percent", 0, 0),
        _panel(2, "Framebuffer used", m.v("fb_used"), "decmbytes", 12, 0),
        _panel(3, "Temperature", m.v("gpu_temp"), "celsius", 0, 8),
        _panel(4, "Power / limit", f"{m.v('power_usage')} / {m.v('power_limit')}", "percentunit", 12, 8),
        _panel(5, "XID errors (5m)", m.over("max_over_time", "xid_count", "5m"), "short", 0, 16),
        _panel(6, "Tensor pipe active", m.v("tensor_active"), "percentunit", 12, 16),
    ]
    return {"uid": "gpu-stack-gpus", "title": "gpu-stack / GPUs", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-6h", "to": "now"}, "tags": ["gpu-stack", "dcgm"], "panels": panels}


def dashboard_configmap(ns: str, metrics: Metrics = METRICS) -> dict[str, Any]:
    """Picked up by the Grafana sidecar (label grafana_dashboard=1, searchNamespace ALL)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "gpu-stack-dashboard", "namespace": ns, "labels": {"grafana_dashboard": "1"}},
            "data": {"gpu-stack-gpus.json": json.dumps(grafana_dashboard(metrics), indent=2, sort_keys=True)}}
