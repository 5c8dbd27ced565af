"""A plan on a real control plane, and the convergence model's verdict beside it.

`apply_plan` makes KWOK nodes from the model's nodes (convergence/analysis.py `_nodes`: names, labels,
taints) with the GPU allocatable the readiness gate expects (guest/readiness-gate.sh GS_GATE_NODES;
the model's GPUs x time-slicing replicas where the plan has no gate), then server-side applies every
object gpu-stack applies itself on the Kubernetes cluster: the manifests/ groups, the typed
kubernetes:* resources of resources.json, the objects the model says the GPU Operator creates (its
RuntimeClass, Services and ServiceMonitors), and the CRDs the plan installs (tests/reference/*crd*).

Out of scope, and said so in docs/ARCHITECTURE.md: what Helm charts render (no Helm here; the model
of their workloads is not checked against the scheduler), the KubeVirt host cluster's objects (a
second cluster), and what only a kubelet or a runtime decides (RuntimeClass handlers, --node-labels).
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from convergence import analysis as cv
from convergence.analysis import Cluster, Plan, Violation
from config.models import StackConfig
from tests.conftest import REFERENCE
from tests.support.control_plane import ControlPlane

# the convergence rules that model what the API server, its admission plugins, the controllers and
# the scheduler decide; the others model Helm charts, Prometheus, kubelet or the guest (rule_networking,
# rule_storage, rule_scraping, rule_targets, rule_dashboards, rule_images, rule_plan_known, rule_kubevirt)
MODELLED = ("scheduling", "runtime", "quotas", "crds", "namespaces", "cpu-nodes")

CRD_FILES = ("crd-servicemonitors.yaml", "crd-prometheusrules.yaml", "crd-podmonitors.yaml",
             "calico-v3.32.1.v1_crd_projectcalico_org.yaml")
SETTLE_TIMEOUT_S = 90


def reference_crds() -> dict[str, dict[str, Any]]:
    """`<group>/<Kind>` -> the CRD, from the upstream files in tests/reference/."""
    out = {}
    for name in CRD_FILES:
        for doc in yaml.safe_load_all((REFERENCE / name).read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                out[f"{doc['spec']['group']}/{doc['spec']['names']['kind']}"] = doc
    return out


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the provider sends it: the model's bookkeeping keys dropped, a redacted secret made a placeholder."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}
    for key in ("stringData", "data"):
        if out.get(key) == "[secret]":  # tools/plan.py redacts secrets; the keys are the component's, the values a placeholder
            out[key] = {"placeholder": "dGVzdA==" if key == "data" else "test"}
    return out


@dataclass
class Case:
    """One plan on one cluster: the model's view and what goes to the API server."""

    name: str
    plan: Plan
    cfg: StackConfig
    cluster: Cluster = field(init=False)
    cluster_provider: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.cluster = cv.build_cluster(self.plan, self.cfg)
        # the guest cluster's provider: the one the smoke-test group (or any manifest group) goes through
        # (manifests/burn-in/ is applied by the gate script, not through a provider: its objects carry no _cluster)
        groups = [o.get("_cluster") for o in self.cluster.objects
                  if str(o.get("_origin", "")).startswith("manifests/") and o.get("_cluster")]
        self.cluster_provider = groups[0] if groups else "kubernetes"

    def objects(self) -> list[dict[str, Any]]:
        """What gpu-stack applies on this cluster, in the model's form (with _origin etc.)."""
        out = []
        for o in self.cluster.objects:
            origin = str(o.get("_origin", ""))
            if "created by" in origin:  # the model's GPU Operator objects: on the release's cluster
                out.append(o)
            elif o.get("_cluster") in (self.cluster_provider, None):  # None: a group a test added, with no resources.json row
                out.append(o)
        return out

    def apply_order(self) -> list[dict[str, Any]]:
        """objects() in the order a deployment applies them: resources in registration order (resources.json, which
        puts every dependsOn before its dependent), what the GPU Operator creates after its release, and within an
        object group CRDs, then Namespaces, then the rest (pulumi-kubernetes yaml/v2 ConfigGroup)."""
        index = {r.get("name"): i for i, r in enumerate(self.plan.resources)}
        operator = self.cluster.release("gpu-operator")
        rank = {"CustomResourceDefinition": 0, "Namespace": 1}

        def key(o: dict[str, Any]) -> tuple[int, int]:
            row = operator.resource if operator is not None and "created by" in str(o.get("_origin", "")) else o.get("_resource")
            return index.get(row, len(index)), rank.get(o.get("kind"), 2)
        return sorted(self.objects(), key=key)

    def crds(self) -> list[dict[str, Any]]:
        """The CRDs the plan installs (model: CRD objects, chart CRD tables, declared present) for the kinds applied."""
        installed = set(cv._crd_sources(self.cluster.objects, self.cluster.releases))
        installed |= {api for h in self.cfg.hosts for api in cv.PRESENT_CRDS.get(h.kind, ())}
        wanted = {cv.api_of(o) for o in self.objects() if cv.is_custom(cv.api_of(o))}
        refs = reference_crds()
        return [refs[api] for api in sorted(wanted & installed) if api in refs]

    def gpu_allocatable(self) -> tuple[str | None, dict[str, int]]:
        """(the extended resource, node -> count) that stands in for the device plugin on the KWOK nodes.

        The resource is the one the model says the plan's device plugin advertises (none: no plugin, no GPUs in
        allocatable); the count is what the readiness gate expects (guest/readiness-gate.sh GS_GATE_NODES), or the
        model's GPUs x time-slicing replicas where the plan has no gate; a node without GPUs in the model has none.
        """
        advertised, replicas, _ = cv._gpu_resources(self.cluster)
        resource = next(iter(sorted(advertised)), None)
        if resource is None:
            return None, {}
        counts = {n.name: n.gpus * replicas for n in self.cluster.nodes if n.gpus}
        gate = next((t for p, t in self.plan.files.items() if p.startswith("guest/") and p.endswith("readiness-gate.sh")), None)
        if gate is not None:
            env = cv.script_exports(gate)
            expected = {n: int(v) for n, v in (p.split("=", 1) for p in env.get("GS_GATE_NODES", "").split() if "=" in p)}
            counts = {n: expected.get(n, c) for n, c in counts.items()}
        return resource, counts


# --- the real control plane's verdict -----------------------------------------------------------


@dataclass
class Applied:
    id: str
    api: str
    accepted: bool
    message: str


@dataclass
class Placed:
    id: str
    kind: str
    pods: int
    nodes: set[str]            # nodes its pods were scheduled on
    pending: list[str]         # the scheduler's messages for pods left Pending
    refused: list[str]         # pods the controllers could not create (FailedCreate), with the admission message
    made_for: set[str] = field(default_factory=set)  # DaemonSet: the nodes its controller made a pod for, scheduled or Pending


@dataclass
class Reality:
    applied: dict[str, Applied] = field(default_factory=dict)
    placed: dict[str, Placed] = field(default_factory=dict)
    quotas: dict[tuple[str, str], str] = field(default_factory=dict)  # (quota id, key) -> "counted" or why not


def apply_plan(cp: ControlPlane, case: Case) -> Reality:
    real = Reality()
    resource, gpus = case.gpu_allocatable()
    for n in case.cluster.nodes:
        cp.create_node(n.name, n.labels, n.taints, {resource: gpus.get(n.name, 0)} if resource and gpus.get(n.name) else {})
    cp.wait_nodes_ready([n.name for n in case.cluster.nodes])
    for crd in case.crds():
        done = cp.apply(crd)
        assert done.returncode == 0, f"CRD {crd['metadata']['name']}: {done.stderr}"
        cp.wait_established(crd["metadata"]["name"])
    objects = case.objects()
    for o in case.apply_order():
        done = cp.apply(_clean(o))
        oid = cv.obj_id(o)
        real.applied[oid] = Applied(oid, cv.api_of(o), done.returncode == 0, done.stderr.strip())
        if o.get("kind") == "CustomResourceDefinition" and done.returncode == 0:
            cp.wait_established(cv.get(o, "metadata.name"))
    existing = {n["metadata"]["name"] for n in cp.get("namespaces")["items"]}
    for ns in sorted({cv.get(o, "metadata.namespace") for o in objects if cv.get(o, "metadata.namespace")} & existing):
        # the controller manager gives each new namespace its default ServiceAccount; pods wait for it
        _wait(cp, f"ServiceAccount {ns}/default", lambda ns=ns: cp.kubectl("-n", ns, "get", "sa", "default", check=False).returncode == 0)
    for o in objects:
        oid = cv.obj_id(o)
        if o.get("kind") in ("DaemonSet", "Job", "Deployment") and real.applied[oid].accepted:
            real.placed[oid] = _settle(cp, o)
    for o in objects:
        if o.get("kind") == "ResourceQuota" and real.applied[cv.obj_id(o)].accepted:
            for key in sorted(cv.get(o, "spec.hard", {}) or {}):
                if "nvidia.com/" in key:
                    real.quotas[(cv.obj_id(o), key)] = quota_enforced(cp, o, key)
    return real


def _wait(cp: ControlPlane, what: str, ok, timeout: float = SETTLE_TIMEOUT_S, fail: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return True
        time.sleep(0.5)
    if fail:
        raise AssertionError(f"timed out waiting for {what}")
    return False


def _events(cp: ControlPlane, ns: str, kind: str, name: str, reason: str) -> list[str]:
    items = cp.get("events", "-n", ns, f"--field-selector=involvedObject.kind={kind},involvedObject.name={name},reason={reason}")["items"]
    return [e.get("message", "") for e in items]


def _owned_pods(cp: ControlPlane, o: dict[str, Any]) -> list[dict[str, Any]]:
    ns, name, kind = cv.get(o, "metadata.namespace"), cv.get(o, "metadata.name"), o["kind"]
    pods = cp.get("pods", "-n", ns)["items"]
    if kind == "Deployment":
        rs = {r["metadata"]["name"] for r in cp.get("replicasets", "-n", ns)["items"]
              if any(ref.get("name") == name for ref in r["metadata"].get("ownerReferences", []))}
        return [p for p in pods if any(ref.get("kind") == "ReplicaSet" and ref.get("name") in rs for ref in p["metadata"].get("ownerReferences", []))]
    return [p for p in pods if any(ref.get("kind") == kind and ref.get("name") == name for ref in p["metadata"].get("ownerReferences", []))]


def _settle(cp: ControlPlane, o: dict[str, Any]) -> Placed:
    """Wait until every pod of the workload is scheduled or marked unschedulable, or its pods are refused."""
    ns, name, kind = cv.get(o, "metadata.namespace"), cv.get(o, "metadata.name"), o["kind"]
    state: dict[str, Any] = {}

    def settled() -> bool:
        refused_owner = kind if kind != "Deployment" else "ReplicaSet"
        owners = [name] if kind != "Deployment" else [r["metadata"]["name"] for r in cp.get("replicasets", "-n", ns)["items"]
                                                    if any(ref.get("name") == name for ref in r["metadata"].get("ownerReferences", []))]
        refused = [m for owner in owners for m in _events(cp, ns, refused_owner, owner, "FailedCreate")]
        pods = _owned_pods(cp, o)
        if kind == "DaemonSet":
            ds = cp.get("daemonset", "-n", ns, name)
            if ds.get("status", {}).get("observedGeneration") != ds["metadata"]["generation"]:
                return False
            want = ds["status"].get("desiredNumberScheduled", 0)
            if len(pods) < want and not refused:
                return False
            if want and len(pods) >= want:
                refused = []
        elif not pods and not refused:
            return False
        if pods:
            refused = []  # a refusal the controller's retry got past (e.g. a RuntimeClass applied after it)
        pending = []
        for p in pods:
            if p["spec"].get("nodeName"):
                continue
            cond = next((c for c in p.get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"), None)
            if cond is None or cond.get("reason") != "Unschedulable":
                return False
            pending.append(cond.get("message", ""))
        state.update(pods=pods, pending=pending, refused=refused)
        return True

    _wait(cp, f"{kind} {ns}/{name} to settle", settled)
    pods = state["pods"]
    return Placed(f"{kind} {ns}/{name}", kind, len(pods), {p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")},
                  state["pending"], state["refused"], {t for p in pods for t in _daemon_target(p)})


def _daemon_target(pod: dict[str, Any]) -> set[str]:
    """The node a DaemonSet pod was made for: its nodeName, or, still Pending, the metadata.name matchFields term the
    DaemonSet controller puts in its node affinity (pkg/controller/daemon/util ReplaceDaemonSetPodNodeNameNodeAffinity)."""
    if pod["spec"].get("nodeName"):
        return {pod["spec"]["nodeName"]}
    terms = (((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
             or {}).get("nodeSelectorTerms") or []
    return {v for t in terms for f in t.get("matchFields") or [] if f.get("key") == "metadata.name" for v in f.get("values") or []}


def quota_enforced(cp: ControlPlane, quota: dict[str, Any], key: str) -> str:
    """Whether the real quota admission counts `key`: pods of one GPU each, up to hard + 1, in the quota's namespace."""
    ns, hard = cv.get(quota, "metadata.namespace"), int(str(cv.get(quota, "spec.hard")[key]))
    resource = key.split(".", 1)[1] if key.startswith(("requests.", "limits.")) else key
    _wait(cp, f"quota {ns} status", lambda: bool(cp.get("resourcequota", "-n", ns, cv.get(quota, "metadata.name")).get("status", {}).get("hard")))
    made, verdict = [], "not counted: %d pods of one %s each were admitted against a hard limit of %d" % (hard + 1, resource, hard)
    for i in range(hard + 1):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"quota-probe-{i}", "namespace": ns},
               "spec": {"containers": [{"name": "c", "image": "registry.invalid/probe",
                                        "resources": {"requests": {resource: "1"}, "limits": {resource: "1"}}}]}}
        done = cp.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
        if done.returncode != 0:
            verdict = "counted" if "exceeded quota" in done.stderr and i == hard else f"refused pod {i}: {done.stderr.strip()}"
            break
        made.append(pod["metadata"]["name"])
    if made:
        cp.kubectl("-n", ns, "delete", "pod", *made, "--wait=false", check=False)
    return verdict


# --- the model beside it --------------------------------------------------------------------------


def model_fit(case: Case, spec: dict[str, Any]) -> set[str]:
    """Nodes the model says a pod of this spec may run on: labels, taints, and the GPUs it requests, after RuntimeClass
    admission has merged the class's scheduling into the pod (convergence/analysis.py admitted_spec)."""
    classes = {cv.get(o, "metadata.name"): o for o in case.cluster.of_kind("RuntimeClass")}
    admitted = cv.admitted_spec(cv.Workload("", "", {}, spec, "manifest"), classes.get(spec.get("runtimeClassName")))
    if admitted is None:
        return set()
    spec = admitted
    advertised, replicas, _ = cv._gpu_resources(case.cluster)
    wanted = cv._gpu_requests(spec)
    _, gate = case.gpu_allocatable()
    out = set()
    for n in case.cluster.nodes:
        if cv.labels_fit(spec, n) or cv.untolerated(spec.get("tolerations") or [], n.taints):
            continue
        if any(r not in advertised or v > gate.get(n.name, 0) for r, v in wanted.items()):
            continue
        out.add(n.name)
    return out


def model_daemon_nodes(case: Case, spec: dict[str, Any]) -> set[str]:
    """Nodes a DaemonSet gets a pod on: the DaemonSet controller's own predicates are labels and taints only."""
    return {n.name for n in case.cluster.nodes if not cv.labels_fit(spec, n) and not cv.untolerated(spec.get("tolerations") or [], n.taints)}


@dataclass
class Row:
    case: str
    rule: str
    object: str
    model: str
    real: str

    @property
    def agree(self) -> bool:
        return (self.model == "ok") == (self.real == "ok")


def table(case: Case, real: Reality) -> list[Row]:
    """Every modelled rule, for every object both sides judge: the model's verdict beside the real one."""
    violations: dict[tuple[str, str], list[Violation]] = {}
    for rule in MODELLED:
        for v in cv.check(case.plan, case.cfg, rules=[rule]):
            violations.setdefault((rule, v.object), []).append(v)
    model = lambda rule, oid: "; ".join(v.message for v in violations.get((rule, oid), [])) or "ok"  # noqa: E731
    rows: list[Row] = []
    workloads = {w.id: w for w in case.cluster.workloads if w.origin == "manifest"}
    namespaced = {cv.obj_id(o) for o in case.objects() if cv.get(o, "metadata.namespace")}
    for oid, a in sorted(real.applied.items()):
        # each rule's row counts only the refusals that rule is about; any other refusal fails the tests on its own
        no_kind = not a.accepted and ("no matches for kind" in a.message or "ensure CRDs are installed" in a.message)
        if cv.is_custom(a.api) or no_kind:
            rows.append(Row(case.name, "crds", oid, model("crds", oid), a.message if no_kind else "ok"))
        no_namespace = not a.accepted and re.search(r'namespaces? "[^"]+" not found', a.message)
        if oid in namespaced:
            rows.append(Row(case.name, "namespaces", oid, model("namespaces", oid), a.message if no_namespace else "ok"))
    for oid, p in sorted(real.placed.items()):
        w = workloads.get(oid)
        if w is None:
            continue
        runtime_refused = [m for m in p.refused if "RuntimeClass" in m]
        if w.spec.get("runtimeClassName"):
            rows.append(Row(case.name, "runtime", oid, model("runtime", oid), runtime_refused[0] if runtime_refused else "ok"))
        if p.refused:
            continue  # no pod to schedule
        evaluated = case.cluster.mode == "init" or cv._is_gpu_workload(w)
        if evaluated:
            nowhere = not p.nodes
            rows.append(Row(case.name, "scheduling", oid, model("scheduling", oid),
                            ("Pending: " + (p.pending[0] if p.pending else "no pod")) if nowhere else "ok"))
        if p.kind == "DaemonSet" and _is_gpu_daemonset(w):
            # a pod made for a node without GPUs counts whether it runs there or stays Pending (the DaemonSet never
            # becomes ready), as the rule says
            cpu_nodes = sorted(p.made_for & {n.name for n in case.cluster.nodes if not n.gpus})
            rows.append(Row(case.name, "cpu-nodes", oid, model("cpu-nodes", oid),
                            f"has a pod for node(s) without GPUs: {', '.join(cpu_nodes)}" if cpu_nodes else "ok"))
    for (qid, key), verdict in sorted(real.quotas.items()):
        rows.append(Row(case.name, "quotas", f"{qid} {key}", model("quotas", qid) if key in _flagged_keys(violations, qid) else "ok",
                        "ok" if verdict == "counted" else verdict))
    return rows


def _is_gpu_daemonset(w) -> bool:
    return cv._is_gpu_workload(w)


def _flagged_keys(violations, qid: str) -> set[str]:
    return {m.group(1) for v in violations.get(("quotas", qid), []) if (m := re.search(r"quota key '([^']+)'", v.message))}


def placement_mismatches(case: Case, real: Reality) -> list[str]:
    """Where the real scheduler put each workload gpu-stack renders, against the nodes the model allows."""
    out = []
    workloads = {w.id: w for w in case.cluster.workloads if w.origin == "manifest"}
    for oid, p in sorted(real.placed.items()):
        w = workloads.get(oid)
        if w is None or p.refused:
            continue
        fit = model_fit(case, w.spec)
        if p.kind == "DaemonSet":
            daemon = model_daemon_nodes(case, w.spec)
            if p.nodes != fit or p.pods != len(daemon):
                out.append(f"{oid}: real pods {p.pods} on {sorted(p.nodes)} (Pending: {p.pending}); model: pods on {sorted(daemon)}, scheduled on {sorted(fit)}")
        elif not p.nodes <= fit or bool(p.nodes) != bool(fit):
            out.append(f"{oid}: real on {sorted(p.nodes)} (Pending: {p.pending}); model: any of {sorted(fit)}")
    return out


def format_table(rows: list[Row]) -> str:
    return "\n".join(f"{'  ' if r.agree else '!!'} {r.case:10} {r.rule:11} {r.object:60} model: {r.model[:90]:90} real: {r.real[:160]}" for r in rows)
