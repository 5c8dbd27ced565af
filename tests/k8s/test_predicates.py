"""The convergence model's scheduling predicates, case by case, against the real scheduler (Kubernetes 1.36.5).

convergence/analysis.py re-implements Toleration.ToleratesTaint, NoSchedule/NoExecute/PreferNoSchedule and
required node affinity (terms ORed, expressions ANDed, an empty term matching nothing). The parameter tables of
tests/test_convergence.py are run here as pods on KWOK nodes: the real scheduler's decision must be the model's.
"""

from __future__ import annotations

import json
import time

from convergence import analysis as cv
from tests.test_convergence import GPU_TAINT

TOLERATIONS = [  # tests/test_convergence.py test_toleration_semantics, against GPU_TAINT
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "operator": "Exists"},
    {"operator": "Exists"},
    {"operator": "Exists", "effect": "NoExecute"},
    {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "value": "true"},
    {"key": "nvidia.com/gpu", "operator": "Equal", "value": "false"},
    {"key": "nvidia.com/gpu", "operator": "Equal", "effect": "NoSchedule"},
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
    {"operator": "Equal", "value": "true"},  # the API server refuses it: an empty key needs Exists
]
LABELS = {"a": "1", "b": "x"}


def _term(*e):
    return {"matchExpressions": list(e)}


AFFINITIES = [  # tests/test_convergence.py test_affinity_terms_are_ored_and_expressions_anded, against LABELS
    [_term({"key": "a", "operator": "In", "values": ["2"]}), _term({"key": "b", "operator": "Exists"})],
    [_term({"key": "a", "operator": "In", "values": ["1"]}, {"key": "c", "operator": "Exists"})],
    [_term({"key": "c", "operator": "DoesNotExist"}, {"key": "a", "operator": "Gt", "values": ["0"]})],
    [_term({"key": "a", "operator": "NotIn", "values": ["2"]})],
    [_term({"key": "a", "operator": "Lt", "values": ["1"]})],
    [{}],  # an empty term matches no node
]
SELECTORS = [{"a": "1"}, {"a": "2"}, {"a": "1", "b": "x"}]


def _pod(name: str, node: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/probe"}], **spec,
                     "nodeSelector": {**spec.get("nodeSelector", {}), "kubernetes.io/hostname": node}}}


def _verdicts(cp, names: list[str], timeout: float = 60) -> dict[str, str]:
    """name -> "scheduled" or the scheduler's Unschedulable message."""
    deadline, out = time.monotonic() + timeout, {}
    while time.monotonic() < deadline and len(out) < len(names):
        for p in cp.get("pods", "-n", "default")["items"]:
            name = p["metadata"]["name"]
            cond = next((c for c in p.get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"), None)
            if p["spec"].get("nodeName"):
                out[name] = "scheduled"
            elif cond and cond.get("reason") == "Unschedulable":
                out[name] = cond.get("message", "")
        time.sleep(0.5)
    return out


def test_tolerations_taints_and_node_affinity_agree_with_the_real_scheduler(control_plane):
    cp = control_plane
    cp.create_node("tainted", {"kubernetes.io/hostname": "tainted"}, [GPU_TAINT], {})
    cp.create_node("prefer", {"kubernetes.io/hostname": "prefer"}, [{"key": "a", "value": "", "effect": "PreferNoSchedule"}], {})
    cp.create_node("labelled", {"kubernetes.io/hostname": "labelled", **LABELS}, [], {})
    cp.wait_nodes_ready(["tainted", "prefer", "labelled"])
    model: dict[str, bool] = {}
    pods = []
    for i, tol in enumerate(TOLERATIONS):
        pods.append(_pod(f"tol-{i}", "tainted", tolerations=[tol]))
        model[f"tol-{i}"] = not cv.untolerated([tol], [GPU_TAINT])
    pods.append(_pod("no-toleration-prefer", "prefer"))
    model["no-toleration-prefer"] = not cv.untolerated([], [{"key": "a", "value": "", "effect": "PreferNoSchedule"}])
    node = cv.Node("labelled", {"kubernetes.io/hostname": "labelled", **LABELS}, [], 0, None)
    for i, terms in enumerate(AFFINITIES):
        spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}
        pods.append(_pod(f"affinity-{i}", "labelled", **spec))
        model[f"affinity-{i}"] = not cv.labels_fit(spec, node)
    for i, sel in enumerate(SELECTORS):
        pods.append(_pod(f"selector-{i}", "labelled", nodeSelector=sel))
        model[f"selector-{i}"] = not cv.labels_fit({"nodeSelector": sel}, node)
    refused = {}
    for pod in pods:
        done = cp.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
        if done.returncode != 0:
            refused[pod["metadata"]["name"]] = "refused: " + done.stderr.strip()
    real = {**_verdicts(cp, [p["metadata"]["name"] for p in pods if p["metadata"]["name"] not in refused]), **refused}
    rows = [(name, "schedulable" if model[name] else "not schedulable", real.get(name, "undecided")) for name in model]
    text = "\n".join(f"{'  ' if (m == 'schedulable') == (r == 'scheduled') else '!!'} {n:22} model: {m:16} real: {r}" for n, m, r in rows)
    print("\n" + text)
    assert all(r != "undecided" for _, _, r in rows), text
    assert all((m == "schedulable") == (r == "scheduled") for _, m, r in rows), text
    assert any("untolerated taint" in r for _, _, r in rows), text
    assert any("didn't match Pod's node affinity/selector" in r for _, _, r in rows), text
