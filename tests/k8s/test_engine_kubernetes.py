"""The real engine for the Kubernetes half (issue 30, item 3): a Kubernetes-only stack under the real CLI.

The Pulumi CLI and the pulumi-kubernetes provider from `make engine` (engine/engine.toml: the provider at the one
version the Go module proxy serves, a deviation recorded there), the program as an automation-API inline program
(tools/engine.py), against a real Kubernetes 1.36.5 control plane on 127.0.0.1 (tests/support/control_plane.py)
with one KWOK GPU node. No VM: the libvirt, command and tls plugins stay blocked.

The stack is an existing cluster (`kubernetes.mode: existing`, `vms: []`, which config accepts), with no
Pulumi.<stack>.yaml of its own: it is a test stack, not an example a user would copy. Its config turns on every
add-on that gpu-stack applies itself and turns off what cannot run here:
- monitoring (kube-prometheus-stack is a Helm chart; charts cannot be fetched here), and with it the DCGM
  ServiceMonitor/PrometheusRule objects and the drift check, which belong to the monitoring stack;
- the device plugin is deployed `static` (a plain DaemonSet gpu-stack renders), not from its Helm chart;
- no readiness gate or burn-in: they run kubectl on a VM over SSH (the command plugin, blocked), and a stack
  with no VMs has none.
What is left, and is created, checked, updated and destroyed for real: the nvidia RuntimeClass, the device
plugin's ConfigMap and DaemonSet, a GPU quota's Namespace, ResourceQuota and LimitRange, and the smoke test's
Namespace and Job. The secret the Kubernetes half really carries is gpu-stack:kubeconfig (the provider's
kubeconfig, with the admin client key embedded): it must be ciphertext in the exported state.

Skips on a workstation without the binaries; FAILS with CI=true (tests/conftest.py missing_validator).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from tests.engine.conftest import require_plugins
from tests.support.engine import kubernetes_lifecycle, kubernetes_up
from tools import mockrun
from tools.engine import engine_bin, isolated

STACK = "k8s-only"
NODE = "gpu-node-0"
GPUS_ON_NODE = 2
CONFIG = {
    "gpu-stack:production": False,
    "gpu-stack:kubernetes": {"version": "1.36.5", "mode": "existing", "nodeTaints": []},
    "gpu-stack:guest": {
        "os": {"family": "ubuntu", "version": "24.04"}, "sshUser": "ubuntu",
        "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpuLXN0YWNrLWRldi1leGFtcGxlLWtleS1vbmx5 ops@gpu-stack",
        "nvidia": {"driverVersion": "580.173.02", "installMethod": "package"},
        "containerRuntime": {"name": "containerd", "nvidiaToolkitVersion": "1.20.0"},
    },
    "gpu-stack:addons": {
        "devicePlugin": {"enabled": True, "deploy": "static", "timeSlicing": {"replicas": 2}},
        "monitoring": {"enabled": False},
        "smokeTest": True,
        "gpuQuotas": [{"namespace": "ml-team", "gpus": 2}],
    },
}
CHANGED_QUOTA = 3
SECRET_SIG = "4dabf18193072939515e22adb298388d"
COMPONENTS = ("pulumi:pulumi:Stack", "gpu-stack:index:", "kubernetes:yaml/v2:")
"""Component resources: they hold the objects and change with them; the objects' own steps are what is checked."""  # the engine's marker of a secret value in state


def changed_config() -> dict:
    addons = json.loads(json.dumps(CONFIG["gpu-stack:addons"]))
    addons["gpuQuotas"][0]["gpus"] = CHANGED_QUOTA
    return {"gpu-stack:addons": addons}


def planned_objects() -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object the program applies for CONFIG, from the program itself (mock run)."""
    values, keys = mockrun.config_values({**CONFIG, "gpu-stack:kubeconfig": {"secure": "x"}}, lambda k: "placeholder")
    result = mockrun.run(values, keys)
    objects = []
    for group in result.of_type("kubernetes:yaml/v2:ConfigGroup"):
        for obj in group.inputs["objs"]:
            objects.append((obj["kind"].lower(), obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
    assert objects, "the stack applies objects"
    return sorted(objects)


def embedded_kubeconfig(path: Path) -> tuple[Path, str]:
    """The control plane's kubeconfig with its certificates and key embedded (*-data), as a user's is; and the key's data."""
    doc = yaml.safe_load(path.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    data = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    cluster["certificate-authority-data"] = data(cluster.pop("certificate-authority"))
    user["client-certificate-data"] = data(user.pop("client-certificate"))
    user["client-key-data"] = key = data(user.pop("client-key"))
    out = path.with_name("embedded.kubeconfig")
    out.write_text(yaml.safe_dump(doc))
    out.chmod(0o600)
    return out, key


@pytest.fixture(scope="module")
def provider_bin() -> Path:
    bin_dir = engine_bin()
    if bin_dir is None:
        from tests.conftest import missing_validator

        missing_validator("the real engine is not built: run `make engine` (scripts/build-engine.sh builds it from engine/)")
    return require_plugins(bin_dir, ("kubernetes",))


def _steps(step: dict, type_: str) -> list[str]:
    return [e["op"] for e in step["events"] if e.get("type") == type_]


def test_kubernetes_only_stack_lives_and_dies_under_the_real_engine(control_plane, provider_bin):
    control_plane.create_node(NODE, {"nvidia.com/gpu.present": "true"}, [], {"nvidia.com/gpu": GPUS_ON_NODE})
    control_plane.wait_nodes_ready([NODE])
    kubeconfig, client_key = embedded_kubeconfig(control_plane.kubeconfig)
    objects = planned_objects()
    life = isolated(kubernetes_lifecycle, str(provider_bin), STACK, CONFIG, str(kubeconfig),
                    str(control_plane.bin_dir / "kubectl"), objects, changed_config(), timeout=540)

    def why(name: str) -> str:
        step = life[name]
        return f"{name}: {step['error'] or step['stdout']}\n" + "\n".join(
            e["message"] for e in step["events"] if e.get("severity") == "error")

    for name in ("up", "again", "changed_preview", "changed_up", "destroy"):
        print(f"{name}: ok={life[name]['ok']} {life[name]['summary']}")

    # pulumi up creates everything gpu-stack applies itself, and the API server holds it
    assert life["up"]["ok"], why("up")
    missing = [oid for oid, obj in life["after_up"].items() if obj is None]
    assert not missing, f"after `pulumi up` the control plane lacks {missing}"
    for kind in ("RuntimeClass", "ConfigMap", "DaemonSet", "Namespace", "ResourceQuota", "LimitRange", "Job"):
        assert "create" in _steps(life["up"], f"kubernetes:{_api(kind)}:{kind}"), f"{kind} was not created by the provider"
    daemonset = life["after_up"]["daemonset/kube-system/nvidia-device-plugin-daemonset"]
    assert daemonset["status"].get("numberReady") == 1, "the device plugin runs on the KWOK GPU node"
    quota = life["after_up"]["resourcequota/ml-team/gpu-quota"]
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "2"}

    # the secret the Kubernetes half carries (the kubeconfig, client key and all) is ciphertext in the state
    assert client_key not in life["state"] and base64.b64decode(client_key).decode() not in life["state"]
    assert client_key not in life["stack_file"]
    state = json.loads(life["state"])
    provider = next(r for r in state["deployment"]["resources"] if r["type"] == "pulumi:providers:kubernetes")
    assert provider["inputs"]["kubeconfig"][SECRET_SIG] and "ciphertext" in provider["inputs"]["kubeconfig"], provider["inputs"]
    assert state["deployment"]["secrets_providers"]["type"] == "passphrase"

    # a second run changes nothing
    assert life["again"]["ok"], why("again")
    assert set(life["again"]["summary"]) <= {"same"}, life["again"]["summary"]

    # a changed quota previews as an update of that ResourceQuota alone, and `up` applies it
    assert life["changed_preview"]["ok"], why("changed_preview")
    changed = {(e["type"], e["op"]) for e in life["changed_preview"]["events"]
               if e.get("op") not in (None, "same") and not e["type"].startswith(COMPONENTS)}
    assert changed == {("kubernetes:core/v1:ResourceQuota", "update")}, life["changed_preview"]["events"]
    assert life["changed_up"]["ok"], why("changed_up")
    assert life["after_change"]["resourcequota/ml-team/gpu-quota"]["spec"]["hard"] == {"requests.nvidia.com/gpu": str(CHANGED_QUOTA)}

    # pulumi destroy removes it all
    assert life["destroy"]["ok"], why("destroy")
    left = [oid for oid, obj in life["after_destroy"].items() if obj is not None]
    assert not left, f"after `pulumi destroy` the control plane still holds {left}"


def _api(kind: str) -> str:
    return {"RuntimeClass": "node.k8s.io/v1", "DaemonSet": "apps/v1", "Job": "batch/v1"}.get(kind, "core/v1")


def test_an_object_the_api_server_refuses_fails_pulumi_up_with_its_message(control_plane, provider_bin):
    """A GPU quota for a namespace that does not exist, which gpu-stack is told not to create: the real API
    server refuses the ResourceQuota, and `pulumi up` fails with its message (no model decides this)."""
    kubeconfig, _ = embedded_kubeconfig(control_plane.kubeconfig)
    addons = {**CONFIG["gpu-stack:addons"], "devicePlugin": {"enabled": False}, "smokeTest": False,
              "gpuQuotas": [{"namespace": "absent-team", "gpus": 1, "createNamespace": False}]}
    out = isolated(kubernetes_up, str(provider_bin), STACK, {**CONFIG, "gpu-stack:addons": addons}, str(kubeconfig), timeout=300)
    text = out["stdout"] + out["error"] + "".join(e.get("message", "") for e in out["events"])
    assert not out["ok"], text
    assert 'namespaces "absent-team" not found' in text, text
    assert control_plane.kubectl("get", "resourcequota", "-A", "-o", "name").stdout.strip() == ""
