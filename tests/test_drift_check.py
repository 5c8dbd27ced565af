"""The optional in-cluster drift check (render/drift_check.py, addons.monitoring.driftCheck): off by default; its
manifests against the Kubernetes schemas and the PodMonitor CRD; placed by the convergence check on a tainted GPU
node; its script run for real (POSIX sh, as busybox ash) against a node's files with its output read by promtool;
its alert under promtool's unit tests (tests/promtool/drift-alerts.test.yaml)."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

from render.drift_check import ALERT, NAME, drift_alert_group, drift_check_script
from tests.conftest import ROOT, require_reference, require_tool, run_stack, stack_file
from tests.test_addons import _closed, manifests
from tests.test_convergence import add_objects, check, config, named, tainted_dev

GROUP = "kubernetes:yaml/v2:ConfigGroup"


def enabled(raw: dict | None = None) -> dict:
    raw = raw or stack_file("dev")
    raw["addons"].setdefault("monitoring", {})["driftCheck"] = {"enabled": True, "intervalSeconds": 120}
    return raw


def drift_objects(raw: dict) -> list[dict]:
    return [o for o in manifests(run_stack(raw, preview=False)) if NAME in o["metadata"]["name"] or o["kind"] == "PrometheusRule"]


def test_off_by_default():
    objs = drift_objects(stack_file("dev"))
    assert [o["kind"] for o in objs] == ["PrometheusRule"]
    assert "gpu-stack.drift" not in [g["name"] for g in objs[0]["spec"]["groups"]]


def test_manifests_validate_and_run_on_every_gpu_node():
    objs = drift_objects(enabled())
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "PodMonitor", "PrometheusRule", "ServiceAccount"]
    for o in objs:
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(o, "1.32", strict=True)
    pm = next(o for o in objs if o["kind"] == "PodMonitor")
    crd = yaml.safe_load(require_reference("crd-podmonitors.yaml").read_text().split("\n---\n", 1)[-1])
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(_closed(schema)).validate(pm)
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert sorted(v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v) == ["/sys/module", "/var/lib/dpkg"], "never the host's root"
    assert all(c["securityContext"]["runAsNonRoot"] for c in spec["containers"])
    role = next(o for o in objs if o["kind"] == "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}], "read-only: get nodes, nothing else"
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    assert drift_alert_group() in rule["spec"]["groups"]


def _images(raw: dict) -> list[str]:
    ds = next(o for o in drift_objects(raw) if o["kind"] == "DaemonSet")
    return [c["image"] for c in ds["spec"]["template"]["spec"]["containers"]]


def test_images_are_pinned_and_follow_the_registry():
    raw = enabled()
    raw["addons"]["images"] = {"registry": "harbor.lab.local"}
    version = raw["kubernetes"]["version"]
    assert _images(raw) == ["harbor.lab.local/library/busybox:1.37.0", f"harbor.lab.local/kubectl:v{version}"]
    raw["addons"]["images"] = {"overrides": {"registry.k8s.io/kubectl": "harbor.lab.local/k8s/kubectl"}}
    assert _images(raw)[1] == f"harbor.lab.local/k8s/kubectl:v{version}"


@pytest.mark.parametrize("version", ["1.35.9", "1.37.2"])
def test_kubectl_sidecar_follows_the_clusters_kubernetes_version(version):
    """kubectl is supported within one minor of kube-apiserver (kubernetes.io/releases/version-skew-policy/#kubectl):
    the sidecar runs the cluster's own release, not a fixed tag that falls out of support (it was v1.32.4)."""
    raw = enabled()
    raw["kubernetes"]["version"] = version
    assert _images(raw)[1] == f"registry.k8s.io/kubectl:v{version}"


def test_refused_where_no_kubectl_image_exists():
    """registry.k8s.io/kubectl is published from 1.28 on: a 1.27 cluster gets one line naming the key, no manifests."""
    from config.errors import ConfigError
    from stacks.load import parse_stack_config
    from tests.test_guest_scripts import SECRETS
    raw = enabled()
    raw["kubernetes"]["version"] = "1.27.16"
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, SECRETS)
    found = {i.path: i.message for i in info.value.issues}
    assert "registry.k8s.io/kubectl exists from 1.28 on" in found["addons.monitoring.driftCheck.enabled"], found
    raw["addons"]["monitoring"]["driftCheck"]["enabled"] = False
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, SECRETS)
    assert "addons.monitoring.driftCheck.enabled" not in {i.path for i in info.value.issues}


def test_the_convergence_check_places_it_on_a_tainted_gpu_node_and_refuses_it_without_the_toleration():
    objs = [o for o in drift_objects(enabled()) if o["kind"] != "PrometheusRule"]
    plan = add_objects(tainted_dev(), "drift", *objs)
    ds = f"DaemonSet monitoring/{NAME}"
    assert not named(check(plan, config("dev"), rules=["scheduling"]), "scheduling", ds)
    assert not [v for v in check(plan, config("dev"), rules=["scraping"]) if NAME in v.object]
    bare = [dict(o, spec={**o["spec"], "template": {**o["spec"]["template"], "spec": {
        k: v for k, v in o["spec"]["template"]["spec"].items() if k != "tolerations"}}}) if o["kind"] == "DaemonSet" else o for o in objs]
    got = named(check(add_objects(tainted_dev(), "drift", *bare), config("dev"), rules=["scheduling"]), "scheduling", ds)
    assert got and "does not tolerate nvidia.com/gpu=true:NoSchedule" in got[0].message


# --- the script, run -------------------------------------------------------------------------------------

UUID0, UUID1 = "GPU-3b5a5e1c-6d5f-0a7e-9d6f-2c1b0e8f4a11", "GPU-7d2c4b9e-1f3a-4c8d-b6e5-0a9f8e7d6c22"


def node_json(annotations: dict[str, str], kubelet: str = "v1.32.4") -> str:
    """The Node as the API server answers ?pretty=true (two-space indent), with managedFields naming the same keys."""
    node = {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": "gpu-dev-0", "annotations": annotations,
                         "managedFields": [{"manager": "kubectl-annotate", "operation": "Update", "apiVersion": "v1",
                                            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{k}": {} for k in annotations}}}}]},
            "status": {"nodeInfo": {"kubeletVersion": kubelet, "containerRuntimeVersion": "containerd://1.7.27"}}}
    return json.dumps(node, indent=2)


DPKG_STATUS = """Package: kubeadm
Status: install ok installed
Priority: optional
Version: {kubeadm}

Package: nvidia-container-toolkit
Status: install ok installed
Version: {toolkit}

Package: nvidia-fabricmanager-590
Status: deinstall ok config-files
Version: 590.44.01-0ubuntu0.22.04.1

Package: nvidia-fabricmanager-570
Status: install ok installed
Version: 570.172.08-0ubuntu0.22.04.1
"""


def run_check(tmp_path, annotations: dict[str, str], *, driver="590.48.01", toolkit="1.17.8-1", kubeadm="1.32.4-1.1",
              gpus=((UUID0, "0000:0d:00.0"), (UUID1, "0000:0e:00.0")), family="ubuntu") -> str:
    host, proc, bin_ = tmp_path / "host", tmp_path / "proc", tmp_path / "bin"
    (host / "sys/module/nvidia").mkdir(parents=True)
    (host / "sys/module/nvidia/version").write_text(driver + "\n")
    (host / "var/lib/dpkg").mkdir(parents=True)
    (host / "var/lib/dpkg/status").write_text(DPKG_STATUS.format(kubeadm=kubeadm, toolkit=toolkit))
    for uuid, bus in gpus:  # the driver's own format (nv-procfs.c): a tab, a space, the value
        d = proc / "driver/nvidia/gpus" / bus
        d.mkdir(parents=True)
        (d / "information").write_text(f"Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 185\nGPU UUID: \t {uuid}\n"
                                        f"Video BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
                                        f"DMA Mask: \t 0xfffffffffffff\nBus Location: \t {bus}\nDevice Minor: \t 0\nGPU Excluded:\t No\n")
    bin_.mkdir()
    (tmp_path / "node.json").write_text(node_json(annotations))
    wget = bin_ / "wget"  # the kubectl proxy: the Node for exactly the URL the script asks
    wget.write_text(f'#!/bin/sh\n[ "$4" = "http://127.0.0.1:8001/api/v1/nodes/gpu-dev-0?pretty=true" ] || exit 1\ncat {tmp_path}/node.json\n')
    wget.chmod(wget.stat().st_mode | stat.S_IEXEC)
    script = tmp_path / "drift-check.sh"
    script.write_text(drift_check_script())
    env = {"PATH": f"{bin_}:{os.environ['PATH']}", "NODE_NAME": "gpu-dev-0", "DRIFT_FAMILY": family, "DRIFT_ONCE": "1",
           "DRIFT_FM_PACKAGE": "nvidia-fabricmanager-590 nvidia-fabricmanager-570",
           "DRIFT_HOST": str(host), "DRIFT_PROC": str(proc), "DRIFT_METRICS": str(tmp_path / "metrics.txt")}
    r = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "metrics.txt").read_text()
    promtool = require_tool("promtool")
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    return text


PLANNED = {"gpu-stack.io/expected-driver": "590.48.01", "gpu-stack.io/expected-toolkit": "1.17.8",
           "gpu-stack.io/expected-kubernetes": "1.32.4", "gpu-stack.io/gpu-uuids": f"{UUID0}@00000000:0D:00.0,{UUID1}@00000000:0E:00.0"}


def series(text: str) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith("gpu_stack_node_drift{")}


def test_script_on_a_node_at_its_plan_exports_zero(tmp_path):
    s = series(run_check(tmp_path, PLANNED))
    assert s == {
        'gpu_stack_node_drift{node="gpu-dev-0",component="driver",expected="590.48.01",actual="590.48.01"}': "0",
        'gpu_stack_node_drift{node="gpu-dev-0",component="toolkit",expected="1.17.8",actual="1.17.8"}': "0",
        'gpu_stack_node_drift{node="gpu-dev-0",component="kubelet",expected="1.32.4",actual="1.32.4"}': "0",
        'gpu_stack_node_drift{node="gpu-dev-0",component="kubeadm",expected="1.32.4",actual="1.32.4"}': "0",
        'gpu_stack_node_drift{node="gpu-dev-0",component="gpus",expected="2",actual="2"}': "0",
    }


def test_script_on_a_drifted_node_exports_one_per_difference(tmp_path):
    notes = dict(PLANNED, **{"gpu-stack.io/expected-fabricmanager": "590.48.01"})
    s = series(run_check(tmp_path, notes, driver="580.95.05", toolkit="1.18.0-1",
                         gpus=((UUID0, "0000:0d:00.0"), ("GPU-00000000-1111-2222-3333-444444444444", "0000:0e:00.0"))))
    assert s['gpu_stack_node_drift{node="gpu-dev-0",component="driver",expected="590.48.01",actual="580.95.05"}'] == "1"
    assert s['gpu_stack_node_drift{node="gpu-dev-0",component="toolkit",expected="1.17.8",actual="1.18.0"}'] == "1"
    # Fabric Manager: the -590 package is removed (config-files only), the -570 one installed
    assert s['gpu_stack_node_drift{node="gpu-dev-0",component="fabricmanager",expected="590.48.01",actual="570.172.08"}'] == "1"
    assert s['gpu_stack_node_drift{node="gpu-dev-0",component="gpus",expected="2",actual="1"}'] == "1", "a replaced board"
    assert s['gpu_stack_node_drift{node="gpu-dev-0",component="kubelet",expected="1.32.4",actual="1.32.4"}'] == "0"


def test_script_on_el_leaves_the_packages_to_the_doctor(tmp_path):
    """No rpm database reader in the pod: no package series at all (a missing one would read as drift)."""
    s = series(run_check(tmp_path, PLANNED, toolkit="1.18.0-1", family="rhel"))
    assert {k.split('component="')[1].split('"')[0] for k in s} == {"driver", "kubelet", "gpus"}
    assert set(s.values()) == {"0"}


def test_script_is_shellcheck_clean():
    tool = require_tool("shellcheck")
    r = subprocess.run([tool, "-s", "sh", str(ROOT / "render" / "drift-check.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


# --- the alert ---------------------------------------------------------------------------------------------

def test_promtool_alert_fires_after_two_hours_of_drift_only(tmp_path):
    promtool = require_tool("promtool")
    (tmp_path / "drift-alerts.rules.yaml").write_text(yaml.safe_dump({"groups": [drift_alert_group()]}))
    check_rules = subprocess.run([promtool, "check", "rules", "drift-alerts.rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check_rules.returncode == 0, check_rules.stdout + check_rules.stderr
    (tmp_path / "drift-alerts.test.yaml").write_text((ROOT / "tests" / "promtool" / "drift-alerts.test.yaml").read_text())
    proc = subprocess.run([promtool, "test", "rules", "drift-alerts.test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ALERT in (ROOT / "tests" / "promtool" / "drift-alerts.test.yaml").read_text()
