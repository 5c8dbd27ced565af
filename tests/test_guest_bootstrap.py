"""The guest command chain under mocks: order, triggers, secrets, pinning, fleet join."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import run_stack
from tools.mockrun import SECRET_SIG

CMD = "command:remote:Command"
ORDER = ["wait-ssh", "preflight", "os-prep", "nouveau", "nouveau-check", "driver",
         "nvidia-runtime-container-runtime", "kubernetes", "kubeconfig", "verify"]


def commands(result, vm="gpu-dev-0"):
    return {r.name.removeprefix(f"{vm}-guest-"): r for r in result.of_type(CMD) if r.name.startswith(f"{vm}-guest-")}


def test_phases_run_in_order_one_after_another(dev):
    cmds = commands(run_stack(dev))
    assert [n for n in ORDER if n in cmds] == ORDER
    for before, after in zip(ORDER, ORDER[1:]):
        assert cmds[after].depends_on == [f"gpu-dev-0-guest-{before}"], after
    assert cmds["wait-ssh"].depends_on == ["gpu-dev-0"], "the first phase waits for the whole VM component"
    assert cmds["kubernetes-teardown"].depends_on == ["gpu-dev-0-guest-kubernetes"]


def test_components_and_parents(dev):
    result = run_stack(dev)
    assert result.named("gpu-dev-0-guest").type == "gpu-stack:index:GpuGuestBootstrap"
    runtime = result.named("gpu-dev-0-guest-nvidia-runtime")
    assert runtime.type == "gpu-stack:index:NvidiaRuntime" and runtime.parent == "gpu-dev-0-guest"
    assert commands(result)["nvidia-runtime-container-runtime"].parent == "gpu-dev-0-guest-nvidia-runtime"
    assert commands(result)["driver"].parent == "gpu-dev-0-guest"


def test_same_config_gives_identical_scripts_and_triggers(dev):
    a = {n: (c.inputs["create"], c.inputs.get("triggers")) for n, c in commands(run_stack(dev)).items()}
    b = {n: (c.inputs["create"], c.inputs.get("triggers")) for n, c in commands(run_stack(dev, preview=False)).items()}
    assert a == b


def test_driver_change_touches_only_the_driver_phase_of_the_bootstrap(dev):
    """verify no longer re-runs for a driver change: upgrade-verify checks it (tests/test_upgrades.py);
    the driver phase's update is the version gate, which leaves a version change to the upgrade path."""
    before = commands(run_stack(dev))
    changed = copy.deepcopy(dev)
    changed["guest"]["nvidia"]["driverVersion"] = "570.195.03"
    after = commands(run_stack(changed))
    differs = sorted(n for n in before if (before[n].inputs["create"], before[n].inputs.get("triggers"))
                     != (after[n].inputs["create"], after[n].inputs.get("triggers")))
    assert differs == ["driver"]
    assert "upgrade-gate.sh" in after["driver"].inputs["update"]


def test_init_needs_no_token_and_kubeconfig_stays_secret(dev):
    cmds = commands(run_stack(dev, preview=False))
    kube = cmds["kubernetes"]
    assert "stdin" not in kube.inputs, "kubeadm init creates its own short-lived token; no secret is derived"
    assert "--token-ttl 0" not in kube.inputs["create"] and "kubeadm token create" not in kube.inputs["create"]
    kubeconfig = cmds["kubeconfig"]
    assert kubeconfig.inputs["logging"] == "none" and "stdout" in kubeconfig.additional_secret_outputs
    assert cmds["driver"].inputs["logging"] == "stdoutAndStderr"
    assert cmds["driver"].custom_timeouts == {"create": "45m", "update": "45m"}


def test_connections_pin_the_host_key_and_keep_the_key_secret(dev):
    result = run_stack(dev, preview=False)
    pinned = result.outputs["vms"]["gpu-dev-0"]["hostPublicKey"]
    for name, cmd in commands(result).items():
        conn = cmd.inputs["connection"]
        assert conn[SECRET_SIG], f"{name}: the connection holds the private key, so it is secret as a whole"
        assert conn["value"]["hostKey"] == pinned, name
    for name, (limit, per_dial) in {"wait-ssh": (188, 5), "nouveau-check": (188, 5), "driver": (10, 10)}.items():
        conn = commands(result)[name].inputs["connection"]["value"]
        assert (conn["dialErrorLimit"], conn["perDialTimeout"]) == (limit, per_dial), name


def test_stack_outputs_inventory_and_secret_kubeconfig(dev):
    outputs = run_stack(dev, preview=False).outputs
    assert outputs["gpuInventory"]["gpu-dev-0"]["gpus"][0]["busId"] == "00000000:01:00.0"
    assert set(outputs["kubeconfig"]) == {"[secret]"}


def test_fleet_in_init_mode_joins_the_first_vm(dev):
    dev["vms"][0]["vcpus"] = 4
    dev["vms"][0]["memoryGib"] = 32
    dev["vms"].append({**copy.deepcopy(dev["vms"][0]), "name": "gpu-dev-1",
                       "gpus": [{"address": "0000:86:00.0", "model": "L40S", "numaNode": 1}]})
    result = run_stack(dev, preview=False)
    first, second = commands(result, "gpu-dev-0"), commands(result, "gpu-dev-1")
    assert "export GS_K8S_ROLE=init" in first["kubernetes"].inputs["create"]
    join = second["kubernetes"].inputs["create"]
    ip = result.outputs["vms"]["gpu-dev-0"]["ip"]
    assert "export GS_K8S_ROLE=join" in join and f"export GS_K8S_ENDPOINT={ip}:6443" in join
    assert "export GS_K8S_CA_HASH=sha256:" in join
    assert "kubeconfig" not in second
    # the join's token comes from a command on the control plane, secret from end to end
    token = second["join-token"]
    assert token.inputs["connection"]["value"]["host"] == ip, "created on the init VM"
    assert "kubeadm token create" in token.inputs["create"] and "--ttl" in token.inputs["create"]
    assert "export GS_TOKEN_TTL=2h" in token.inputs["create"] and "export GS_JOIN_NODE=gpu-dev-1" in token.inputs["create"]
    assert token.inputs["logging"] == "none" and "stdout" in token.additional_secret_outputs
    kube = second["kubernetes"]
    assert kube.inputs["stdin"][SECRET_SIG] and kube.inputs["stdin"]["value"] == "mock00.0000000000000000\n"
    assert kube.inputs["logging"] == "none" and {"stdout", "stderr"} <= set(kube.additional_secret_outputs)
    assert f"gpu-dev-0-guest-kubeconfig" in token.depends_on and "gpu-dev-1-guest-nvidia-runtime-container-runtime" in token.depends_on
    assert any(t.startswith("vm:") for t in token.inputs["triggers"]), "a rebuilt VM gets a fresh token"


def test_existing_cluster_mode_sets_up_no_kubeadm(dev):
    dev["kubernetes"]["mode"] = "existing"
    result = run_stack(dev, secrets={"sshPrivateKey": "k", "grafanaAdminPassword": "p", "kubeconfig": "apiVersion: v1"})
    cmds = commands(result)
    assert "kubernetes" not in cmds and "kubeconfig" not in cmds and "verify" in cmds


def _two_vms(dev):
    dev["vms"][0]["vcpus"] = 4
    dev["vms"][0]["memoryGib"] = 32
    dev["vms"].append({**copy.deepcopy(dev["vms"][0]), "name": "gpu-dev-1",
                       "gpus": [{"address": "0000:86:00.0", "model": "L40S", "numaNode": 1}]})
    return dev


def test_unchanged_fleet_reruns_nothing_and_a_new_vm_gets_only_its_own_token(dev):
    """Tokens expire, but no trigger depends on time: an unchanged stack (a later `pulumi up`) renders the
    same inputs for every command; adding a VM adds its own token command and touches no joined node."""
    two = _two_vms(copy.deepcopy(dev))
    a = {n: (c.inputs["create"], c.inputs.get("triggers"), c.inputs.get("stdin")) for n, c in
         {**commands(run_stack(two, preview=False)), **{f"1:{k}": v for k, v in commands(run_stack(two, preview=False), "gpu-dev-1").items()}}.items()}
    b = {n: (c.inputs["create"], c.inputs.get("triggers"), c.inputs.get("stdin")) for n, c in
         {**commands(run_stack(two, preview=False)), **{f"1:{k}": v for k, v in commands(run_stack(two, preview=False), "gpu-dev-1").items()}}.items()}
    assert a == b
    three = copy.deepcopy(two)
    three["vms"].append({**copy.deepcopy(two["vms"][1]), "name": "gpu-dev-2",
                         "gpus": [{"address": "0000:af:00.0", "model": "L40S", "numaNode": 1}]})
    three["vms"][0]["vcpus"] = 2
    three["vms"][1]["vcpus"] = 2
    three["vms"][2]["vcpus"] = 2
    result = run_stack(three, preview=False)
    second_before = commands(run_stack(_vcpus(two, 2), preview=False), "gpu-dev-1")
    second_after = commands(result, "gpu-dev-1")
    assert {n: (c.inputs["create"], c.inputs.get("triggers"), c.inputs.get("stdin")) for n, c in second_after.items()} == \
           {n: (c.inputs["create"], c.inputs.get("triggers"), c.inputs.get("stdin")) for n, c in second_before.items()}
    assert "join-token" in commands(result, "gpu-dev-2")


def _vcpus(raw, n):
    raw = copy.deepcopy(raw)
    for vm in raw["vms"]:
        vm["vcpus"] = n
    return raw


def test_bootstrap_token_rotation_is_refused_naming_what_replaced_it(dev):
    from config.errors import ConfigError
    from stacks.load import parse_stack_config
    dev["kubernetes"]["bootstrapTokenRotation"] = 1
    with pytest.raises(ConfigError) as err:
        parse_stack_config(dev, {"sshPrivateKey", "grafanaAdminPassword"})
    text = str(err.value)
    assert "kubernetes.bootstrapTokenRotation" in text and "joinTokenTtl" in text


def test_joining_vms_wait_for_the_control_plane_only_at_their_kubernetes_phase(dev):
    """Provisioning runs in parallel; a join waits for the init VM's kubeconfig phase, nothing earlier does."""
    dev["vms"][0]["vcpus"] = 4
    dev["vms"][0]["memoryGib"] = 32
    dev["vms"].append({**copy.deepcopy(dev["vms"][0]), "name": "gpu-dev-1",
                       "gpus": [{"address": "0000:86:00.0", "model": "L40S", "numaNode": 1}]})
    result = run_stack(dev)
    urn = {u.rsplit("::", 1)[1]: u for u in result.registered}
    waits_on_init = {name for name, u in urn.items() if urn["gpu-dev-0-guest-kubeconfig"] in result.dependencies.get(u, [])}
    joining = {n for n in waits_on_init if n.startswith("gpu-dev-1")}
    # verify runs after it anyway; it no longer hashes the kubernetes phase (upgrade-verify checks version changes),
    # and the upgrade commands render without deploy-time values
    assert joining == {"gpu-dev-1-guest-join-token", "gpu-dev-1-guest-kubernetes"}
