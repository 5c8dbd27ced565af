"""What a reviewer reads in `pulumi preview` is known in preview, even when no other resource exists yet.

In a real preview of a stack whose resources are still to be created, their
outputs are unknown: the kube-prometheus-stack Release's `name`, a VM's IP, a
key's text. Whatever is built inside an `apply` over such an output (Helm
values, manifests) then shows as one `[unknown]`, although `make plan` (whose
mock echoes inputs as outputs) shows it in full. These tests run the program
with those outputs withheld (tools/mockrun.py `withhold`: the SDK resolves an
output the monitor does not return as unknown in a dry run) and look for an
unknown anywhere in the inputs a reviewer reads.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_golden_plans import STACKS
from tools import mockrun
from tools.plan import load_stack_file, plan_config

RELEASE = "kubernetes:helm.sh/v3:Release"
GROUP = "kubernetes:yaml/v2:ConfigGroup"
LEGITIMATELY_UNKNOWN = {
    # the cloud-init user-data of a KubeVirt VM holds its SSH host key, a tls.PrivateKey's output
    ("kubernetes:core/v1:Secret", "stringData"),
}


def unknown_paths(value: Any, path: str = "") -> list[str]:
    """Where an unknown sits inside a registered input (Unknown, or the engine's sentinel string)."""
    if type(value).__name__ == "Unknown" or value == mockrun.UNKNOWN:
        return [path or "(whole)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in unknown_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in unknown_paths(v, f"{path}[{i}]")]
    return []


def preview(stack: str, withhold) -> mockrun.RunResult:
    values, secret_keys = plan_config(load_stack_file(stack), stack)
    return mockrun.run(values, secret_keys, stack=stack, preview=True, withhold=withhold)


def kube_prometheus_stack(args) -> bool:
    return args.typ == RELEASE and args.inputs.get("chart") == "kube-prometheus-stack"


@pytest.mark.parametrize("stack", ["prod"])  # fleet runs the device plugin since its CPU-only control plane (docs/FLEET.md)
def test_operator_values_are_known_while_the_monitoring_release_is_created(stack):
    """Issue 22 item 9: the real preview showed the GPU Operator's values as one [unknown]."""
    result = preview(stack, kube_prometheus_stack)
    releases = {r.inputs.get("chart"): r for r in result.of_type(RELEASE)}
    assert "gpu-operator" in releases and "kube-prometheus-stack" in releases
    values = releases["gpu-operator"].inputs.get("values")
    assert isinstance(values, dict) and not unknown_paths(values), f"unknown in the GPU Operator's values: {unknown_paths(values)}"
    assert values["dcgmExporter"]["serviceMonitor"]["additionalLabels"] == {"release": releases["kube-prometheus-stack"].inputs["name"]}


def reviewed_inputs(r: mockrun.Registered) -> dict[str, Any]:
    """Every input of a Release or a ConfigGroup, and of every typed Kubernetes object, less the legitimately unknown."""
    return {k: v for k, v in r.inputs.items() if (r.type, k) not in LEGITIMATELY_UNKNOWN}


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_a_reviewer_reads_waits_on_another_resource(stack):
    """Every resource's outputs unknown, as when the whole stack is to be created: Helm values, manifests and
    Kubernetes objects are still fully known (a provider's kubeconfig, a script with late parameters may not be)."""
    result = preview(stack, lambda args: True)
    checked = [r for r in result.resources if r.type.startswith("kubernetes:")]
    problems = [f"{r.type} {r.name}: {p}" for r in checked for p in unknown_paths(reviewed_inputs(r))]
    assert not problems, "unknown in preview:\n" + "\n".join(problems)
    if stack in ("prod", "fleet"):
        assert any(r.type == RELEASE for r in checked) and any(r.type == GROUP for r in checked)
