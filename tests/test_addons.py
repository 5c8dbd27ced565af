"""Kubernetes add-ons: what the program registers, checked against the real schemas and chart defaults."""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import require_reference, run_stack, stack_file
from tools.mockrun import SECRET_SIG

RELEASE = "kubernetes:helm.sh/v3:Release"
GROUP = "kubernetes:yaml/v2:ConfigGroup"
CHART_DEFAULTS = {
    "nvidia-device-plugin": "nvidia-device-plugin-v0.20.0.values.yaml",
    "gpu-operator": "gpu-operator-v26.7.0.values.yaml",
    "kube-prometheus-stack": "kube-prometheus-stack-88.5.3.values.yaml",
}
# Paths documented only as commented examples in the chart's values.yaml; the
# marker must still be there, so a renamed option fails the test.
DOCUMENTED_IN_COMMENTS = {("gpu-operator", "dcgmExporter.config"): "# name: custom-dcgm-exporter-metrics"}
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
        reference = require_reference(CHART_DEFAULTS[chart])
        text = reference.read_text()
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
    assert quota == {"requests.nvidia.com/gpu": "4", "limits.nvidia.com/gpu": "4"}
    assert objs[("LimitRange", "ml-dev")]["spec"]["limits"][0]["defaultRequest"] == {"nvidia.com/gpu": "1"}


def test_existing_cluster_uses_the_configured_kubeconfig():
    raw = copy.deepcopy(plugin_path())
    raw["kubernetes"]["mode"] = "existing"
    result = run_stack(raw, secrets={"sshPrivateKey": "k", "grafanaAdminPassword": "p", "kubeconfig": "apiVersion: v1\nkind: Config\n"})
    assert result.named("kubernetes").inputs["kubeconfig"]["value"] == "apiVersion: v1\nkind: Config\n"
