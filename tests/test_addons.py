"""Kubernetes add-ons: what the program registers, checked against the real schemas and chart defaults."""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from render.helm_values import LOCAL_PATH_VERSION
from render.k8s_manifests import LOCAL_PATH_MANIFEST
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import ROOT, require_reference, run_stack, stack_file
from tools.mockrun import SECRET_SIG

RELEASE = "kubernetes:helm.sh/v3:Release"
GROUP = "kubernetes:yaml/v2:ConfigGroup"
# Pinned chart default values in tests/reference/ (README there gives the provenance).
CHART_DEFAULTS = {
    "nvidia-device-plugin": "nvidia-device-plugin-v0.20.0.values.yaml",
    "gpu-operator": "gpu-operator-v26.7.0.values.yaml",
    "kube-prometheus-stack": "kube-prometheus-stack-88.5.3.values.yaml",
    "tigera-operator": "tigera-operator-v3.32.1.values.yaml",
}
# Paths documented only as commented examples in the chart's values.yaml; the
# marker must still be there, so a renamed option fails the test.
DOCUMENTED_IN_COMMENTS = {
    ("gpu-operator", "dcgmExporter.config"): "# name: custom-dcgm-exporter-metrics",
    ("gpu-operator", "operator.metrics"): "  # metrics:\n  #   serviceMonitor:\n",
    ("tigera-operator", "installation.calicoNetwork"): "  # calicoNetwork:\n",
    ("tigera-operator", "installation.registry"): "  # registry: <custom-registry>\n",
    ("tigera-operator", "installation.imagePath"): "  # imagePath: <optional-path>\n",
    # a value of the kube-state-metrics SUBCHART, passed on under the key kube-prometheus-stack documents as its
    # configuration; the subchart's own values.yaml (prometheus-community/helm-charts charts/kube-state-metrics:
    # `metricLabelsAllowlist: []`, example `- namespaces=[k8s-label-1,k8s-label-n]`) was read in a code index, not
    # at the version kube-prometheus-stack 88.5.3 pins (no copy in tests/reference): issue 27's burn-in label
    ("kube-prometheus-stack", "kube-state-metrics.metricLabelsAllowlist"): "## Configuration for kube-state-metrics subchart\n",
}


def chart_defaults(chart: str, version: str) -> str:
    assert chart in CHART_DEFAULTS, f"no pinned default values for chart {chart} {version}"
    name = CHART_DEFAULTS[chart]
    assert version.lstrip("v") in name, f"{chart} {version} is rendered, but tests/reference/ pins {name}"
    return require_reference(name).read_text()
CRDS = {"ServiceMonitor": "crd-servicemonitors.yaml", "PrometheusRule": "crd-prometheusrules.yaml"}


def plugin_path() -> dict:
    return stack_file("dev")


def operator_path() -> dict:
    raw = stack_file("dev")
    raw["addons"]["devicePlugin"] = {"enabled": False}
    raw["addons"]["gpuOperator"] = {"enabled": True, "migManagerEnabled": True, "migStrategy": "single"}
    raw["addons"]["images"] = {"registry": "harbor.lab.local", "pullSecret": "harbor-pull"}
    return raw


def static_path() -> dict:
    """Seed 001: Alma 9, docker, Kubernetes 1.23.17, device plugin 0.11 as a plain DaemonSet."""
    raw = stack_file("dev")
    raw["guest"]["os"] = {"family": "rhel", "version": "9"}
    raw["guest"]["containerRuntime"] = {"name": "docker"}
    raw["kubernetes"]["version"] = "1.23.17"
    raw["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0", "deploy": "static"}
    raw["kubernetes"]["packageRepository"] = "https://mirror.lab/kubernetes/v1.23"
    raw["addons"]["images"] = {"overrides": {"nvcr.io/nvidia/k8s-device-plugin": "harbor.baway.org.cn/k8s/k8s-device-plugin"}}
    return raw


PATHS = {"plugin": plugin_path, "operator": operator_path, "static": static_path}


@functools.cache
def deploy(name: str) -> dict:
    raw = PATHS[name]()
    return {"name": name, "raw": raw, "result": run_stack(raw, preview=False)}


@pytest.fixture(params=sorted(PATHS))
def deployed(request):
    return deploy(request.param)


def unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def manifests(result) -> list[dict]:
    objs = [o for g in result.of_type(GROUP) for o in unwrap(g.inputs["objs"])]
    for typed in result.resources:
        if typed.type in ("kubernetes:core/v1:Namespace", "kubernetes:core/v1:Secret"):
            objs.append({k: v for k, v in unwrap(typed.inputs).items()})
    return objs


def unknown_value_paths(values: dict, defaults: Any, prefix: str = "") -> list[str]:
    """Paths set in `values` that the chart's defaults do not have. Below an empty map or null, anything goes."""
    out = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if not isinstance(defaults, dict) or key not in defaults:
            out.append(path)
            continue
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict) and default:
            out += unknown_value_paths(value, default, path)
        elif isinstance(value, dict) and default is not None and not isinstance(default, dict):
            out.append(f"{path} (the chart has a {type(default).__name__} here)")
    return out


def test_every_helm_value_path_exists_in_the_pinned_chart(deployed):
    releases = deployed["result"].of_type(RELEASE)
    assert releases or deployed["name"] == "static"
    for release in releases:
        chart = release.inputs["chart"]
        text = chart_defaults(chart, release.inputs["version"])
        defaults = yaml.safe_load(text)
        unknown = []
        for path in unknown_value_paths(unwrap(release.inputs["values"]), defaults):
            marker = DOCUMENTED_IN_COMMENTS.get((chart, path))
            if marker is None:
                unknown.append(path)
            else:
                assert marker in text, f"{chart}: {path} is no longer documented in values.yaml"
        assert not unknown, f"{chart}: these values do nothing in the pinned chart: {unknown}"


def test_a_typo_in_values_is_caught():
    defaults = yaml.safe_load(require_reference("gpu-operator-v26.7.0.values.yaml").read_text())
    assert unknown_value_paths({"dcgmExporter": {"servicemonitor": {"enabled": True}}}, defaults) == ["dcgmExporter.servicemonitor"]


def _k8s_schema_version(raw: dict) -> str:
    """kubernetes-validate ships 1.25 and newer; older clusters (seed 001: 1.23) are checked against 1.25."""
    minor = ".".join(raw["kubernetes"]["version"].split(".")[:2])
    available = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    return minor if minor in available else min(available, key=lambda v: tuple(map(int, v.split("."))))


def test_core_objects_validate_against_the_kubernetes_schemas(deployed):
    version = _k8s_schema_version(deployed["raw"])
    core = [o for o in manifests(deployed["result"]) if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert core
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)


def test_a_misspelled_field_fails_schema_validation():
    obj = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "x"},
           "spec": {"hardd": {"requests.nvidia.com/gpu": "1"}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, "1.32", strict=True)


def _closed(schema: Any) -> Any:
    """The API server prunes unknown fields of a CRD object silently; the test refuses them instead."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    """openAPIV3Schema is OpenAPI 3.0 (close to draft 4); its RE2 patterns are not all Python regexes, so no metaschema check."""
    crd = yaml.safe_load(require_reference(CRDS[kind]).read_text().split("\n---\n", 1)[1])
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(_closed(schema))


def test_monitoring_objects_validate_against_the_crd_schemas(deployed):
    monitoring = [o for o in manifests(deployed["result"]) if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {o["kind"] for o in monitoring} >= {"PrometheusRule"}
    for obj in monitoring:
        crd_validator(obj["kind"]).validate(obj)


def test_a_misspelled_service_monitor_field_is_refused():
    obj = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
           "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "15s"}]}}
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        crd_validator("ServiceMonitor").validate(obj)


def test_release_names_are_fixed_and_labels_match_the_real_release(deployed):
    result = deployed["result"]
    releases = {r.inputs["chart"]: r for r in result.of_type(RELEASE)}
    monitoring = releases["kube-prometheus-stack"]
    assert monitoring.inputs["name"] == "kube-prometheus-stack"
    real_name = result.registered[next(u for u in result.registered if u.endswith("::monitoring-release"))].state["name"]
    labelled = [o for o in manifests(result) if o["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert labelled and all(o["metadata"]["labels"]["release"] == real_name for o in labelled)
    if deployed["name"] == "operator":
        values = unwrap(releases["gpu-operator"].inputs["values"])
        assert values["dcgmExporter"]["serviceMonitor"]["additionalLabels"] == {"release": real_name}


def test_renamed_monitoring_release_moves_every_label():
    raw = plugin_path()
    raw["addons"]["monitoring"] = {"enabled": True, "releaseName": "prom"}
    result = run_stack(raw, preview=False)
    labelled = [o for o in manifests(result) if o["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert {o["metadata"]["labels"]["release"] for o in labelled} == {"prom"}


def test_operator_skips_what_the_guest_installed_and_the_standalone_plugin():
    deployed = deploy("operator")
    values = unwrap(next(r for r in deployed["result"].of_type(RELEASE) if r.inputs["chart"] == "gpu-operator").inputs["values"])
    assert values["driver"]["enabled"] is False and values["toolkit"]["enabled"] is False
    assert values["devicePlugin"]["enabled"] is True
    assert values["operator"]["repository"] == "harbor.lab.local/nvidia"
    assert values["dcgmExporter"]["repository"] == "harbor.lab.local/nvidia/k8s"


def test_operator_depends_on_the_monitoring_release_for_its_crds():
    result = run_stack(operator_path())
    operator = result.named("gpu-operator-release")
    assert "monitoring-release" in operator.depends_on
    assert "monitoring-release" in result.named("dcgm-objects").depends_on


def test_both_plugins_never_run():
    values = unwrap(next(r for r in run_stack({**operator_path(), "addons": {**operator_path()["addons"],
                    "gpuOperator": {"enabled": True, "devicePluginEnabled": False}, "devicePlugin": {"enabled": True}}},
                    preview=False).of_type(RELEASE) if r.inputs["chart"] == "gpu-operator").inputs["values"])
    assert values["devicePlugin"]["enabled"] is False


def test_plugin_path_uses_the_runtime_class_and_standalone_exporter():
    deployed = deploy("plugin")
    result = deployed["result"]
    values = unwrap(next(r for r in result.of_type(RELEASE) if r.inputs["chart"] == "nvidia-device-plugin").inputs["values"])
    assert values["runtimeClassName"] == "nvidia"
    sharing = yaml.safe_load(values["config"]["map"]["default"])["sharing"]["timeSlicing"]
    assert sharing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}] and "renameByDefault" in sharing
    kinds = {(o["kind"], o["metadata"]["name"]) for o in manifests(result)}
    assert ("RuntimeClass", "nvidia") in kinds and ("DaemonSet", "dcgm-exporter") in kinds
    job = next(o for o in manifests(result) if o["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia" and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert result.outputs["expectedAllocatable"] == {"gpu-dev-0": {"nvidia.com/gpu": 4}}


def test_static_plugin_is_seed001s_daemonset():
    deployed = deploy("static")
    ds = next(o for o in manifests(deployed["result"]) if o["kind"] == "DaemonSet" and o["metadata"]["namespace"] == "kube-system")
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "harbor.baway.org.cn/k8s/k8s-device-plugin:v0.11.0"
    assert {"name": "FAIL_ON_INIT_ERROR", "value": "true"} in container["env"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["priorityClassName"] == "system-node-critical" and pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "runtimeClassName" not in pod, "docker's default runtime is nvidia"


def test_grafana_password_stays_secret(deployed):
    result = deployed["result"]
    secret = result.named("monitoring-grafana-admin")
    assert secret.inputs["stringData"][SECRET_SIG]
    values = unwrap(next(r for r in result.of_type(RELEASE) if r.inputs["chart"] == "kube-prometheus-stack").inputs["values"])
    assert values["grafana"]["admin"]["existingSecret"] == secret.inputs["metadata"]["name"]
    assert "test-grafana-password" not in yaml.safe_dump(values)


def test_explicit_kubernetes_provider_gets_the_secret_kubeconfig(deployed):
    provider = deployed["result"].named("kubernetes")
    assert provider.type == "pulumi:providers:kubernetes"
    assert provider.inputs["kubeconfig"][SECRET_SIG]
    assert all(r.provider == "kubernetes" for r in deployed["result"].of_type(RELEASE))


def test_quota_objects(deployed):
    objs = {(o["kind"], o["metadata"].get("namespace")): o for o in manifests(deployed["result"])}
    quota = objs[("ResourceQuota", "ml-dev")]["spec"]["hard"]
    # quota counts extended resources as requests only: a limits.* key would be inert
    assert quota == {"requests.nvidia.com/gpu": "4"}
    assert objs[("LimitRange", "ml-dev")]["spec"]["limits"][0]["defaultRequest"] == {"nvidia.com/gpu": "1"}


def test_existing_cluster_uses_the_configured_kubeconfig():
    raw = copy.deepcopy(plugin_path())
    raw["kubernetes"]["mode"] = "existing"
    result = run_stack(raw, secrets={"sshPrivateKey": "k", "grafanaAdminPassword": "p", "kubeconfig": "apiVersion: v1\nkind: Config\n"})
    assert result.named("kubernetes").inputs["kubeconfig"]["value"] == "apiVersion: v1\nkind: Config\n"


# --- pod network, storage, gates (issue 10) ------------------------------------------------

def _release(result, chart: str):
    return next((r for r in result.of_type(RELEASE) if r.inputs["chart"] == chart), None)


def _values(result, chart: str) -> dict:
    return unwrap(_release(result, chart).inputs["values"])


def _all_deps(result, name: str, seen: set[str] | None = None) -> set[str]:
    """Everything a resource waits for through its own dependsOn, transitively (not via its parent)."""
    seen = set() if seen is None else seen
    for dep in result.named(name).depends_on:
        if dep not in seen:
            seen.add(dep)
            _all_deps(result, dep, seen)
    return seen


def join_path() -> dict:
    raw = plugin_path()
    raw["kubernetes"] = {"version": "1.32.4", "mode": "join", "nodeTaints": [],
                         "join": {"controlPlaneEndpoint": "10.0.0.10:6443", "caCertHash": "sha256:" + "a" * 64}}
    return raw


JOIN_SECRETS = {"sshPrivateKey": "k", "grafanaAdminPassword": "p", "joinToken": "abcdef.0123456789abcdef",
                "kubeconfig": "apiVersion: v1\nkind: Config\n"}
EXISTING_SECRETS = {"sshPrivateKey": "k", "grafanaAdminPassword": "p", "kubeconfig": "apiVersion: v1\nkind: Config\n"}


def existing_path(**monitoring) -> dict:
    raw = plugin_path()
    raw["kubernetes"]["mode"] = "existing"
    raw["addons"]["monitoring"] = {"enabled": True, **monitoring}
    return raw


def test_calico_is_installed_in_mode_init_on_the_pod_cidr(deployed):
    release = _release(deployed["result"], "tigera-operator")
    assert release is not None and release.inputs["name"] == "calico" and release.inputs["version"] == "v3.32.1"
    assert release.inputs["repositoryOpts"]["repo"] == "https://docs.tigera.io/calico/charts"
    assert release.provider == "kubernetes"
    pools = unwrap(release.inputs["values"])["installation"]["calicoNetwork"]["ipPools"]
    assert [p["cidr"] for p in pools] == [deployed["raw"]["kubernetes"].get("podCidr", "10.244.0.0/16")]
    assert deployed["result"].outputs["podNetwork"]["podCidr"] == "10.244.0.0/16"


def test_calico_crds_are_applied_before_the_operator_chart(deployed):
    """Issue 22 item 3: tigera-operator v3.32.1 ships no CRDs; the crd.projectcalico.org.v1 chart from the same
    repository at the same version is rendered and server-side applied (helm.v4.Chart) before the release."""
    result = deployed["result"]
    release = _release(result, "tigera-operator")
    crds = [r for r in result.of_type("kubernetes:helm.sh/v4:Chart") if r.inputs["chart"] == "crd.projectcalico.org.v1"]
    assert len(crds) == 1, [r.name for r in result.of_type("kubernetes:helm.sh/v4:Chart")]
    chart = crds[0]
    assert chart.inputs["version"] == release.inputs["version"]
    assert chart.inputs["repositoryOpts"] == release.inputs["repositoryOpts"]
    assert chart.provider == "kubernetes" and chart.parent == "pod-network" and chart.inputs["name"] == "calico-crds"
    assert chart.name in _all_deps(result, release.name)
    assert set(_all_deps(result, release.name)) - {chart.name} <= set(_all_deps(result, chart.name))  # waits for what the release waits for


def test_operator_metrics_service_monitor_gets_the_release_label():
    """Issue 22 item 4: the operator's own ServiceMonitor (state-operator-metrics) is labelled for Prometheus."""
    values = _values(deploy("operator")["result"], "gpu-operator")
    assert values["operator"]["metrics"] == {"serviceMonitor": {"additionalLabels": {"release": "kube-prometheus-stack"}}}
    assert values["operator"]["metrics"]["serviceMonitor"]["additionalLabels"] == values["dcgmExporter"]["serviceMonitor"]["additionalLabels"]


def test_the_ip_pool_fields_are_the_charts_documented_ones():
    """installation.calicoNetwork is only a commented example in the chart: every pool field we set is in it."""
    text = require_reference(CHART_DEFAULTS["tigera-operator"]).read_text()
    block = text.split("  # calicoNetwork:\n", 1)[1].split("\n\n", 1)[0]
    example = yaml.safe_load("\n".join(re.sub(r"^  # ?", "", line) for line in block.splitlines()))
    pool = _values(deploy("plugin")["result"], "tigera-operator")["installation"]["calicoNetwork"]["ipPools"][0]
    assert set(pool) <= set(example["ipPools"][0]), set(pool) - set(example["ipPools"][0])
    choices = next(line for line in block.splitlines() if "encapsulation:" in line).split("#")[-1]
    assert pool["encapsulation"] in [c.strip() for c in choices.split(",")], choices


def test_a_podcidr_change_moves_the_pool():
    raw = plugin_path()
    raw["kubernetes"]["podCidr"] = "10.32.0.0/16"
    values = _values(run_stack(raw, preview=False), "tigera-operator")
    assert values["installation"]["calicoNetwork"]["ipPools"][0]["cidr"] == "10.32.0.0/16"


@pytest.mark.parametrize("raw, secrets", [(join_path, JOIN_SECRETS), (existing_path, EXISTING_SECRETS)], ids=["join", "existing"])
def test_no_pod_network_on_a_cluster_this_stack_did_not_create(raw, secrets):
    result = run_stack(raw(), secrets=secrets)
    assert _release(result, "tigera-operator") is None
    assert not result.of_type("gpu-stack:index:PodNetwork")


def test_every_addon_release_and_object_waits_for_the_pod_network(deployed):
    result = deployed["result"]
    # the pod network's own CRD chart comes before its release, not after
    addons = [r for r in result.resources if r.provider == "kubernetes" and r.name not in ("pod-network-release", "pod-network-crds")]
    assert addons
    for r in addons:
        assert "pod-network-release" in _all_deps(result, r.name), f"{r.type} {r.name} does not wait for the pod network"
    assert "pod-network-release" in _all_deps(result, "readiness-gate")


def test_cni_images_follow_the_registry_override():
    result = deploy("operator")["result"]
    values = _values(result, "tigera-operator")
    assert values["installation"]["registry"] == "harbor.lab.local/" and values["installation"]["imagePath"] == "calico"
    assert values["installation"]["imagePullSecrets"] == [{"name": "harbor-pull"}]
    assert values["tigeraOperator"] == {"registry": "harbor.lab.local", "image": "tigera/operator"}
    assert values["calicoctl"] == {"image": "harbor.lab.local/calico/ctl"}
    plain = _values(deploy("plugin")["result"], "tigera-operator")
    assert "registry" not in plain["installation"] and plain["tigeraOperator"]["registry"] == "quay.io"


def test_cni_image_override_keeps_one_path_for_all_calico_images():
    raw = plugin_path()
    raw["addons"]["images"] = {"overrides": {"quay.io/calico/node": "harbor.lab/mirror/calico/node",
                                             "quay.io/tigera/operator": "harbor.lab/mirror/tigera/operator"}}
    values = _values(run_stack(raw, preview=False), "tigera-operator")
    assert values["installation"]["registry"] == "harbor.lab/" and values["installation"]["imagePath"] == "mirror/calico"
    assert values["tigeraOperator"] == {"registry": "harbor.lab", "image": "mirror/tigera/operator"}
    raw["addons"]["images"]["overrides"]["quay.io/calico/cni"] = "harbor.lab/other/cni"
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, {"sshPrivateKey", "grafanaAdminPassword"})
    assert "addons.images.overrides['quay.io/calico/cni']" in str(info.value)
    assert "harbor.lab/mirror/calico/cni" in str(info.value)


def test_init_installs_local_path_as_the_default_class_and_prometheus_names_it(deployed):
    result = deployed["result"]
    objs = {(o["kind"], o["metadata"]["name"]): o for o in unwrap(result.named("local-path-storage-objects").inputs["objs"])}
    sc = objs[("StorageClass", "local-path")]
    assert sc["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert sc["provisioner"] == "rancher.io/local-path" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    spec = _values(result, "kube-prometheus-stack")["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert spec["storageClassName"] == "local-path"
    assert "local-path-storage-objects" in _all_deps(result, "monitoring-release")
    assert "local-path" in result.outputs["storage"]


def test_local_path_images_follow_the_registry_override():
    objs = unwrap(deploy("operator")["result"].named("local-path-storage-objects").inputs["objs"])
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"harbor.lab.local/rancher/local-path-provisioner:{LOCAL_PATH_VERSION}"
    assert pod["imagePullSecrets"] == [{"name": "harbor-pull"}]
    helper = yaml.safe_load(next(o for o in objs if o["kind"] == "ConfigMap")["data"]["helperPod.yaml"])
    assert helper["spec"]["containers"][0]["image"] == "harbor.lab.local/library/busybox:1.37.0"


def test_local_path_manifest_is_the_pinned_upstream_file():
    provenance = (LOCAL_PATH_MANIFEST.parent / "PROVENANCE.md").read_text()
    row = next(line for line in provenance.splitlines() if LOCAL_PATH_MANIFEST.name in line)
    assert hashlib.sha256(LOCAL_PATH_MANIFEST.read_bytes()).hexdigest() in row
    assert f"docker.io/rancher/local-path-provisioner:{LOCAL_PATH_VERSION}" in LOCAL_PATH_MANIFEST.read_text()


def test_reference_files_match_their_pinned_hashes_and_have_provenance():
    reference = ROOT / "tests" / "reference"
    pinned = dict(reversed(line.split("  ", 1)) for line in (reference / "SHA256SUMS").read_text().splitlines())
    readme = (reference / "README.md").read_text()
    files = sorted(p.name for p in reference.iterdir() if p.name not in ("README.md", "SHA256SUMS"))
    assert sorted(pinned) == files
    for name in files:
        assert hashlib.sha256((reference / name).read_bytes()).hexdigest() == pinned[name], name
        assert name in readme, f"{name} has no provenance row in tests/reference/README.md"


def _storage_spec(result):
    return _values(result, "kube-prometheus-stack")["prometheus"]["prometheusSpec"].get("storageSpec")


def test_existing_cluster_without_a_declared_class_gets_no_claim_and_says_so():
    result = run_stack(existing_path(), secrets=EXISTING_SECRETS)
    assert _storage_spec(result) is None
    assert not result.of_type("gpu-stack:index:LocalPathStorage")
    assert "emptyDir" in result.outputs["storage"] and "defaultStorageClassExists" in result.outputs["storage"]


def test_existing_cluster_with_a_declared_default_class_claims_without_naming_one():
    result = run_stack(existing_path(defaultStorageClassExists=True), secrets=EXISTING_SECRETS)
    spec = _storage_spec(result)["volumeClaimTemplate"]["spec"]
    assert "storageClassName" not in spec and spec["resources"]["requests"]["storage"] == "50Gi"


def test_a_named_class_is_used_as_given_and_installs_nothing():
    result = run_stack(existing_path(storageClass="ceph-rbd"), secrets=EXISTING_SECRETS)
    assert _storage_spec(result)["volumeClaimTemplate"]["spec"]["storageClassName"] == "ceph-rbd"
    raw = plugin_path()
    raw["addons"]["monitoring"] = {"enabled": True, "storageClass": "ceph-rbd"}
    result = run_stack(raw)
    assert not result.of_type("gpu-stack:index:LocalPathStorage")
    assert _storage_spec(result)["volumeClaimTemplate"]["spec"]["storageClassName"] == "ceph-rbd"


def test_control_plane_scrapes_kubeadm_binds_to_localhost_are_off(deployed):
    values = _values(deployed["result"], "kube-prometheus-stack")
    for name in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[name] == {"enabled": False}, name


def test_operator_pins_the_dcgm_exporter_our_counters_file_is_from():
    values = _values(deploy("operator")["result"], "gpu-operator")
    version = values["dcgmExporter"]["version"]
    counters = (ROOT / "render" / "dcgm-counters.csv").read_text()
    assert version.rsplit("-", 1)[0] in counters.split("\n", 3)[1], "counters file header names the exporter it is from"
    default = yaml.safe_load(require_reference(CHART_DEFAULTS["gpu-operator"]).read_text())["dcgmExporter"]["version"]
    assert version.rsplit("-", 1)[1] == default.rsplit("-", 1)[1], f"same image flavour as the chart default {default}"


def test_readiness_gate_runs_last_on_the_init_vm_with_the_admin_kubeconfig(deployed):
    result = deployed["result"]
    gate = result.named("readiness-gate")
    assert gate.type == "command:remote:Command" and gate.parent == "readiness"
    deps = _all_deps(result, "readiness-gate")
    releases = {r.name for r in result.of_type(RELEASE)}
    assert releases <= deps and "gpu-smoke-test-objects" in deps
    script = gate.inputs["create"]
    assert "export GS_KUBECONFIG_STDIN=0" in script and "stdin" not in gate.inputs
    resource = "nvidia.com/gpu"
    count = 4 if deployed["name"] == "plugin" else 1
    assert f"export GS_GATE_NODES=gpu-dev-0={count}" in script and f"export GS_GPU_RESOURCE={resource}" in script
    assert result.outputs["readiness"] == {
        "nodes": {"gpu-dev-0": {"ready": True, "allocatable": {resource: count}, "expected": {resource: count}}},
        "smokeTest": {"job": "gpu-stack-smoke/gpu-smoke-test", "status": "Succeeded"}}


def test_the_smoke_job_is_awaited_by_the_gate_not_by_pulumi(deployed):
    job = next(o for o in manifests(deployed["result"]) if o["kind"] == "Job")
    assert job["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert "export GS_SMOKE_JOB=gpu-smoke-test" in deployed["result"].named("readiness-gate").inputs["create"]


def test_join_gate_reads_the_kubeconfig_secret_on_stdin():
    result = run_stack(join_path(), secrets=JOIN_SECRETS)
    gate = result.named("readiness-gate")
    assert "export GS_KUBECONFIG_STDIN=1" in gate.inputs["create"]
    assert gate.inputs["stdin"][SECRET_SIG] and gate.inputs["logging"] == "none"


def test_existing_cluster_has_no_gate_and_the_plan_says_so():
    from tools.plan import addon_summary
    result = run_stack(existing_path(), secrets=EXISTING_SECRETS)
    assert not result.of_type("gpu-stack:index:ReadinessGate")
    assert any("readiness gates: none" in line for line in addon_summary(result))
