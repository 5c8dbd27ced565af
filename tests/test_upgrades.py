"""Day 2 (issue 16): version changes roll over the nodes as planned, ordered upgrade commands.

Update-mode mock runs from one config to the next say which commands re-run
and in which order the engine must run them; refusals name the key; the
upgrade scripts run for real in the guest sandbox with recording stubs.
"""

from __future__ import annotations

import copy

import pytest

from render.guest_scripts import guest_phases, upgrade_phases
from render.nvidia_packages import fabric_packages
from render.rollout import change_issues, reruns, waves
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import ROOT, hgx_board, require_tool, run_stack
from tests.conftest import stack_file as _stack_file


def stack_file(stack: str) -> dict:
    """The example stack at the base these upgrade cases step from (Kubernetes 1.32.4, driver 570.172.08): they test
    kubeadm's one-minor steps and the driver's rerun set, not the example's current pins (tests/test_versions.py)."""
    raw = _stack_file(stack)
    if raw.get("kubernetes") and raw["kubernetes"].get("mode", "init") != "existing" and not raw["kubernetes"].get("pastEndOfSupport"):
        raw["kubernetes"]["version"] = "1.32.4"
    if raw.get("guest") and not raw["guest"]["nvidia"].get("runfileUrl"):
        raw["guest"]["nvidia"]["driverVersion"] = "570.172.08"
    return raw
from tests.support.guest_sandbox import GuestSandbox
from tools.plan import command_inputs

TOKEN = "abcdef.0123456789abcdef"
SECRETS = {"sshPrivateKey", "grafanaAdminPassword", "joinToken", "registryPassword", "kubeconfig"}
NODE_STEPS = ("upgrade-check", "drain", "upgrade-driver", "upgrade-runtime", "upgrade-kubernetes", "upgrade-reboot",
              "upgrade-verify", "uncordon")


# --- configs -------------------------------------------------------------------

# One H100 SXM with its 18 NVLinks (real captures, tests/fixtures/nvidia-smi/PROVENANCE.md) for the
# bootstrap's verify phase on an NVSwitch node; `-q` stays the stub's, so a test can set the fabric state.
_SMI = ROOT / "tests" / "fixtures" / "nvidia-smi"
HGX_SMI = {"L": str(_SMI / "nvidia-smi-L.1xH100-SXM-80GB-VM.590.48.01.txt"),
           "topo": str(_SMI / "nvidia-smi-topo-m.1xH100-SXM-80GB-VM.590.48.01.txt"),
           "nvlink": str(_SMI / "nvidia-smi-nvlink-s.1xH100-SXM-80GB-VM.590.48.01.txt")}
# a whole HGX H100 board in the guest (8 GPUs, 4 NVSwitches: hgx()), as tests/test_verify_checks.py H100_8
HGX8_SMI = {"L": str(_SMI / "nvidia-smi-L.8xH100-SXM.kvm-guest.txt"),
            "topo": str(_SMI / "nvidia-smi-topo-m.8xH100-NVSwitch.kvm-guest.txt"),
            "nvlink": str(_SMI / "nvidia-smi-nvlink-status.8xH100.kvm-guest.AUTHOR-SNIPPED.txt")}


def hgx_sandbox(tmp_path, family: str, raw: dict, **kw) -> GuestSandbox:
    """The guest of hgx(raw): lspci and nvidia-smi show the VM's GPUs and NVSwitches."""
    whole = len(raw["vms"][0]["gpus"]) == 8
    return GuestSandbox(tmp_path, family, lspci_gpus=len(raw["vms"][0]["gpus"]), lspci_nvswitches=len(raw["vms"][0]["nvswitches"]),
                        smi_outputs=HGX8_SMI if whole else HGX_SMI, **kw)

def three_nodes(max_unavailable: int = 1) -> dict:
    """The fleet example cut to three GPU VMs: init (control plane) + 2 join (without its CPU-only control plane cp-1)."""
    raw = copy.deepcopy(stack_file("fleet"))
    raw["vms"] = [vm for vm in raw["vms"] if vm.get("gpus")][:3]
    raw["fleet"] = {"maxUnavailable": max_unavailable}
    return raw


def bumped(raw: dict, *, driver: str | None = None, toolkit: str | None = None, kubernetes: str | None = None) -> dict:
    new = copy.deepcopy(raw)
    if driver:
        new["guest"]["nvidia"]["driverVersion"] = driver
    if toolkit:
        new["guest"]["containerRuntime"]["nvidiaToolkitVersion"] = toolkit
    if kubernetes:
        new["kubernetes"]["version"] = kubernetes
    return new


def rerun_set(old: dict, new: dict) -> tuple[dict[str, str], dict[str, list[str]]]:
    """What the engine runs going from `old` to `new` (both update-mode runs), and the new run's dependencies."""
    before = command_inputs(run_stack(old, preview=False))
    result = run_stack(new, preview=False)
    deps = {r.name: list(r.depends_on) for r in result.resources}
    return reruns(before, command_inputs(result)), deps


def after(deps: dict[str, list[str]], name: str) -> set[str]:
    """Everything `name` waits for, transitively (explicit dependsOn, as the engine orders them)."""
    seen: set[str] = set()
    todo = list(deps.get(name, []))
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo += deps.get(d, [])
    return seen


def node_reruns(runs: dict[str, str], node: str) -> set[str]:
    return {n.removeprefix(f"{node}-") for n in runs if n.startswith(f"{node}-")}


# --- update-mode mock runs: what re-runs, in which order -------------------------------

def test_unchanged_stack_reruns_nothing():
    raw = three_nodes()
    runs, _ = rerun_set(raw, raw)
    assert runs == {}


def test_first_bootstrap_runs_no_upgrade_command():
    result = run_stack(three_nodes(), preview=False)
    upgrade = [r for r in result.of_type("command:remote:Command") if r.parent and r.parent.endswith("-upgrade")]
    assert len(upgrade) == 3 * (len(NODE_STEPS) + 1)  # + burn-in (issue 27), between upgrade-verify and uncordon
    for cmd in upgrade:
        assert "create" not in cmd.inputs and cmd.inputs["update"], f"{cmd.name} must do nothing on create"


@pytest.mark.parametrize("max_unavailable, expected_waves", [
    (1, [["gpu-1-0"], ["gpu-1-1"], ["gpu-2-0"]]),
    (2, [["gpu-1-0"], ["gpu-1-1", "gpu-2-0"]]),
])
def test_driver_patch_bump_rolls_in_waves(max_unavailable, expected_waves):
    raw = three_nodes(max_unavailable)
    cfg, _ = parse_stack_config(raw, SECRETS)
    assert waves(cfg) == expected_waves
    runs, deps = rerun_set(raw, bumped(raw, driver="570.195.03"))
    for node in ("gpu-1-0", "gpu-1-1", "gpu-2-0"):
        assert node_reruns(runs, node) == {"upgrade-check", "drain", "upgrade-driver", "upgrade-reboot", "upgrade-verify",
                                           "burn-in", "uncordon", "guest-driver"}, node
        assert runs[f"{node}-guest-driver"] == "update", "the bootstrap phase only runs its version gate"
        assert all(runs[f"{node}-{p}"] == "update" for p in ("drain", "upgrade-driver", "uncordon"))
        # within the node: drain before the package change, uncordon after verification
        assert f"{node}-drain" in after(deps, f"{node}-upgrade-driver")
        assert f"{node}-upgrade-verify" in after(deps, f"{node}-uncordon")
        # issue 27: the node burns in after its verification, before it is uncordoned
        assert f"{node}-upgrade-verify" in after(deps, f"{node}-burn-in") and f"{node}-burn-in" in after(deps, f"{node}-uncordon")
    # nothing else: no other bootstrap phase, no add-on
    assert len(runs) == 3 * 8, sorted(runs)
    for earlier, later in zip(expected_waves, expected_waves[1:]):
        for node in later:
            waits = after(deps, f"{node}-drain")
            assert all(f"{e}-uncordon" in waits for e in earlier), f"{node} drains only after wave {earlier} is back"
    for wave in expected_waves:
        for a in wave:
            for b in wave:
                if a != b:
                    assert f"{b}-drain" not in after(deps, f"{a}-uncordon"), "one wave's nodes run side by side"


def test_kubernetes_minor_bump_upgrades_the_control_plane_first():
    raw = three_nodes(2)
    runs, deps = rerun_set(raw, bumped(raw, kubernetes="1.33.2"))
    for node in ("gpu-1-0", "gpu-1-1", "gpu-2-0"):
        assert node_reruns(runs, node) == {"upgrade-check", "drain", "upgrade-kubernetes", "upgrade-verify", "burn-in", "uncordon",
                                           "guest-kubernetes"}, node
    for join in ("gpu-1-1", "gpu-2-0"):
        assert "gpu-1-0-uncordon" in after(deps, f"{join}-upgrade-kubernetes"), "kubeadm upgrade apply before any upgrade node"
    result = run_stack(bumped(raw, kubernetes="1.33.2"), preview=False)
    scripts = {c.name: c.inputs["update"] for c in result.of_type("command:remote:Command") if c.name.endswith("-upgrade-kubernetes")}
    assert "export GS_CONTROL_PLANE=1" in scripts["gpu-1-0-upgrade-kubernetes"]
    assert all("export GS_CONTROL_PLANE=0" in scripts[f"{j}-upgrade-kubernetes"] for j in ("gpu-1-1", "gpu-2-0"))


def test_toolkit_only_bump_reruns_the_runtime_step_only():
    raw = three_nodes()
    runs, _ = rerun_set(raw, bumped(raw, toolkit="1.17.9"))
    for node in ("gpu-1-0", "gpu-1-1", "gpu-2-0"):
        assert node_reruns(runs, node) == {"upgrade-check", "drain", "upgrade-runtime", "upgrade-verify", "burn-in", "uncordon",
                                           "guest-nvidia-runtime-container-runtime"}, node


def test_rollout_output_lists_the_waves():
    result = run_stack(three_nodes(2), preview=False)
    assert result.outputs["rollout"]["waves"] == [["gpu-1-0"], ["gpu-1-1", "gpu-2-0"]]


# --- refusals, with the key named ------------------------------------------------------------

def test_kubernetes_two_minors_refused_naming_the_next_version():
    old, _ = parse_stack_config(three_nodes(), SECRETS)
    new, _ = parse_stack_config(bumped(three_nodes(), kubernetes="1.34.1"), SECRETS)
    issues = change_issues(old, new)
    assert [i.path for i in issues] == ["kubernetes.version"]
    assert "1.33.x" in issues[0].message and "one minor at a time" in issues[0].message


def test_kubernetes_downgrade_refused():
    old, _ = parse_stack_config(bumped(three_nodes(), kubernetes="1.33.2"), SECRETS)
    new, _ = parse_stack_config(three_nodes(), SECRETS)
    issues = change_issues(old, new)
    assert [i.path for i in issues] == ["kubernetes.version"] and "downgrade" in issues[0].message


@pytest.mark.parametrize("value, message", [(0, "greater than or equal to 1"), (4, "more than the 3 VMs")])
def test_max_unavailable_out_of_range_refused(value, message):
    with pytest.raises(ConfigError) as e:
        parse_stack_config(three_nodes(value), SECRETS)
    issue = next(i for i in e.value.issues if i.path == "fleet.maxUnavailable")
    assert message in issue.message


def test_blackwell_needs_bar_sizes_from_the_host():
    raw = three_nodes()
    raw["vms"][0]["gpus"] = [{"address": "0000:17:00.0", "model": "B300-SXM-288GB", "numaNode": 0}]  # B200: cited (test_catalog_bars)
    with pytest.raises(ConfigError) as e:
        parse_stack_config(raw, SECRETS)
    assert any(i.path == "vms[0].gpus[0].bar1Gib" and "lspci -vv" in i.message for i in e.value.issues)


def _base_repo(tmp_path, raw: dict):
    """A git repository whose HEAD has Pulumi.t.yaml with `raw`: the BASE of `make plan BASE=HEAD`."""
    import subprocess

    import yaml
    require_tool("git")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "Pulumi.t.yaml").write_text(yaml.safe_dump({"config": {f"gpu-stack:{k}": v for k, v in raw.items()}}))
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base"], check=True)


def _rollout_from_base(tmp_path, new: dict) -> dict:
    import json

    from tools.plan import plan_config, rollout_json
    values, secret_keys = plan_config({f"gpu-stack:{k}": v for k, v in new.items()})
    return json.loads(rollout_json("t", values, secret_keys, run_stack(new), base="HEAD", root=tmp_path))


def test_plan_with_base_refuses_a_two_minor_jump(tmp_path):
    _base_repo(tmp_path, three_nodes())
    with pytest.raises(ConfigError) as e:
        _rollout_from_base(tmp_path, bumped(three_nodes(), kubernetes="1.34.1"))
    assert "gpu-stack:kubernetes.version" in str(e.value) and "1.33.x" in str(e.value)


def test_plan_with_base_writes_the_rollout(tmp_path):
    _base_repo(tmp_path, three_nodes(2))
    doc = _rollout_from_base(tmp_path, bumped(three_nodes(2), driver="570.195.03"))
    assert [[e["node"] for e in w["nodes"]] for w in doc["waves"]] == [["gpu-1-0"], ["gpu-1-1", "gpu-2-0"]]
    for wave in doc["waves"]:
        for entry in wave["nodes"]:
            assert [p["phase"] for p in entry["phases"]] == ["upgrade-check", "drain", "upgrade-driver", "upgrade-reboot",
                                                             "upgrade-verify", "burn-in", "uncordon"]
            assert entry["versionGate"] == ["driver"] and entry["bootstrapReruns"] == []
            assert entry["action"].startswith("drain, change driver ") and entry["action"].endswith("→570.195.03")
    assert doc["otherReruns"] == [] and doc["base"] == "HEAD" and "holds no gpu-stack program" in doc["baseCode"]
    unchanged = _rollout_from_base(tmp_path, three_nodes(2))
    assert all(e["phases"] == [] and e["action"] == "nothing to run" for w in unchanged["waves"] for e in w["nodes"])


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
def test_rendered_upgrade_phases_are_shellcheck_clean(tmp_path, family):
    import subprocess

    from render.guest_scripts import UPGRADE_MANAGED, gate_script, render_script
    tool = require_tool("shellcheck")
    raw = hgx(family, "580.95.05", "B200-SXM-180GB", "NVSwitch-Gen4")
    _, phases = phases_of(raw)
    paths = []
    for phase in upgrade_of(raw):
        paths.append(tmp_path / f"{phase.name}.sh")
        paths[-1].write_text(render_script(phase.name, phase.params))
    for phase in phases:
        if phase.name in UPGRADE_MANAGED:
            paths.append(tmp_path / f"{phase.name}.update.sh")
            paths[-1].write_text(gate_script(phase.name, phase.params))
    proc = subprocess.run([tool, "-s", "bash", *map(str, paths)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- package sets by branch and NVLink generation -----------------------------------------

@pytest.mark.parametrize("family, repo, version, expected", [
    ("ubuntu", None, "570.172.08", ("nvidia-fabricmanager-570", "libnvidia-nscq-570")),
    ("ubuntu", None, "580.95.05", ("nvidia-fabricmanager-580", "libnvidia-nscq-580")),
    ("ubuntu", "cuda", "570.172.08", ("nvidia-fabricmanager-570=570.172.08-1", "libnvidia-nscq-570=570.172.08-1")),
    ("ubuntu", "cuda", "580.95.05", ("nvidia-fabricmanager=580.95.05-1", "libnvidia-nscq=580.95.05-1")),
    ("rhel", None, "570.172.08", ("nvidia-fabric-manager-570.172.08", "libnvidia-nscq-570-570.172.08")),
    ("rhel", None, "580.95.05", ("nvidia-fabricmanager-580.95.05", "libnvidia-nscq-580.95.05")),
])
def test_fabric_manager_names_by_branch_and_repository(family, repo, version, expected):
    assert fabric_packages(family, version, repo).install == expected


def hgx(family: str, driver: str, gpu_model: str = "H100-SXM5-80GB", switch_model: str = "NVSwitch-Gen3") -> dict:
    raw = copy.deepcopy(stack_file("dev"))
    if family == "rhel":
        raw["guest"]["os"] = {"family": "rhel", "version": "9"}
    raw["guest"]["nvidia"]["driverVersion"] = driver
    gpu = {"address": "0000:3b:00.0", "model": gpu_model, "numaNode": 0}
    switch = {"address": "0000:05:00.0", "model": switch_model, "numaNode": 0}
    if gpu_model.startswith("B"):
        gpu["bar1Gib"] = 256
        switch["barMib"] = 32
        raw["vms"][0]["gpus"] = [gpu]
        raw["vms"][0]["nvswitches"] = [switch]
    else:  # a whole HGX H100 board: its NVSwitches come only with all 8 GPUs (Fabric Manager guide, full passthrough)
        raw["vms"][0]["gpus"], raw["vms"][0]["nvswitches"] = hgx_board(gpu_model, switch_model=switch_model)
    return raw


def phases_of(raw: dict, role: str = "init"):
    cfg, _ = parse_stack_config(raw, SECRETS)
    return cfg, guest_phases(cfg.vms[0], cfg.guest, cfg.kubernetes, role)


def run_driver(tmp_path, raw, family) -> list[str]:
    sb = hgx_sandbox(tmp_path, family, raw)
    _, phases = phases_of(raw)
    result = sb.run(next(p for p in phases if p.name == "driver"))
    assert result.returncode == 0, result.stderr
    return sb.mutating()


@pytest.mark.parametrize("driver, names", [
    ("570.172.08", ["nvidia-fabricmanager-570", "libnvidia-nscq-570"]),
    ("580.95.05", ["nvidia-fabricmanager-580", "libnvidia-nscq-580"]),
])
def test_driver_phase_installs_the_branch_fabric_manager_on_ubuntu(tmp_path, driver, names):
    calls = "\n".join(run_driver(tmp_path, hgx("ubuntu", driver), "ubuntu"))
    assert all(n in calls for n in names)
    assert "nvlsm" not in calls, "NVLink 4 (H100) has no subnet manager"
    assert "systemctl enable --now nvidia-fabricmanager" in calls


def test_driver_phase_installs_the_580_names_on_el(tmp_path):
    calls = "\n".join(run_driver(tmp_path, hgx("rhel", "580.95.05"), "rhel"))
    assert "nvidia-fabricmanager-580.95.05" in calls and "libnvidia-nscq-580.95.05" in calls
    assert "nvidia-fabric-manager" not in calls


def test_a_transitional_fabric_manager_package_is_refused(tmp_path):
    """questing's nvidia-fabricmanager-590 (590.48.01-0ubuntu0.25.10.2) is empty and depends on -595
    (packages.ubuntu.com): the pin accepts it, so the driver phase checks the daemon's own package."""
    raw = hgx("ubuntu", "590.48.01")
    sb = hgx_sandbox(tmp_path, "ubuntu", raw,
                      transitional={"nvidia-fabricmanager-590": ["nvidia-fabricmanager-595", "595.58.03-0ubuntu0.25.10.1"]})
    _, phases = phases_of(raw)
    result = sb.run(next(p for p in phases if p.name == "driver"))
    assert result.returncode != 0
    assert "package nvidia-fabricmanager-595) is '595.58.03-0ubuntu0.25.10.1', not the driver's 590.48.01" in result.stderr
    assert "systemctl enable --now nvidia-fabricmanager" not in "\n".join(sb.mutating())


def test_a_transitional_nscq_package_is_refused(tmp_path):
    """noble's libnvidia-nscq-575 depends on -580 (packages.ubuntu.com): NSCQ would not be the driver's."""
    raw = hgx("ubuntu", "590.48.01")
    sb = hgx_sandbox(tmp_path, "ubuntu", raw,
                      transitional={"libnvidia-nscq-590": ["libnvidia-nscq-595", "595.58.03-0ubuntu0.25.10.1"]})
    _, phases = phases_of(raw)
    result = sb.run(next(p for p in phases if p.name == "driver"))
    assert result.returncode != 0
    assert ("libnvidia-nscq.so.595.58.03 (package libnvidia-nscq-595) is '595.58.03-0ubuntu0.25.10.1', "
            "not the driver's 590.48.01") in result.stderr
    assert "systemctl enable --now nvidia-fabricmanager" not in "\n".join(sb.mutating())


def test_b200_gets_nvlsm(tmp_path):
    calls = run_driver(tmp_path, hgx("ubuntu", "580.95.05", "B200-SXM-180GB", "NVSwitch-Gen4"), "ubuntu")
    assert any("nvlsm" in c and "infiniband-diags" in c for c in calls if c.startswith("apt-get install"))


# --- sandbox runs of the upgrade path ------------------------------------------------------

def converge(sb: GuestSandbox, phases, params_for=lambda p: p.params) -> None:
    for phase in phases:
        r = sb.run(phase, stdin=TOKEN + "\n" if phase.stdin_secret == "joinToken" else "", params=params_for(phase))
        assert r.returncode == 0, f"{phase.name}:\n{r.stdout}\n{r.stderr}"


def upgrade_of(raw: dict, role: str = "init", control_plane: bool = True):
    cfg, phases = phases_of(raw, role)
    return upgrade_phases(cfg.vms[0], phases, cfg.fleet, role, control_plane, "nvidia.com/gpu", 4,
                          "kubectl -n nvidia-device-plugin logs ds/nvidia-device-plugin", kubeconfig_on_stdin=False)


def reboot(sb: GuestSandbox) -> None:
    """What the reboot upgrade-reboot scheduled does: the installed module is loaded on the new boot."""
    state = sb.state
    sb.set_state(driver_loaded=state["driver_installed"], reboot_scheduled=False)
    (sb.root / "sys/module/nvidia/version").write_text(f"{state['driver_installed']}\n")


def run_upgrade(sb: GuestSandbox, phases, stop_after: str | None = None) -> dict[str, object]:
    results = {}
    for phase in phases:
        if phase.name == "uncordon":
            sb.set_state(cluster={"nodes": {"gpu-dev-0": {"ready": "True", "allocatable": {"nvidia.com/gpu": "4"}}}})
        r = sb.run(phase, stdin=TOKEN + "\n" if phase.stdin_secret == "joinToken" else "")
        results[phase.name] = r
        if r.returncode != 0:
            return results
        if phase.name == "upgrade-reboot" and "GPU_STACK_REBOOT=1" in r.stdout:
            reboot(sb)
        if phase.name == stop_after:
            return results
    return results


@pytest.fixture
def upgraded_node(tmp_path):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(stack_file("dev"))
    converge(sb, phases)
    sb.clear_calls()
    new = bumped(stack_file("dev"), driver="570.195.03")
    results = run_upgrade(sb, upgrade_of(new))
    return sb, new, results


def test_driver_upgrade_drains_first_reboots_and_uncordons_last(upgraded_node):
    sb, _, results = upgraded_node
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    calls = sb.mutating()
    drain = next(i for i, c in enumerate(calls) if c.startswith("kubectl drain gpu-dev-0"))
    packages = [i for i, c in enumerate(calls) if c.startswith(("apt-get install", "dnf install"))]
    assert packages and drain < min(packages), "drain before any package change"
    assert "--ignore-daemonsets" in calls[drain] and "--force" not in calls[drain] and "--disable-eviction" not in calls[drain]
    assert "--timeout=900s" in calls[drain]
    assert any("nvidia-headless-570-server" in c for c in calls[drain:])
    assert any(c.endswith("systemctl reboot") for c in calls), "the loaded module differed: one reboot"
    uncordon = next(i for i, c in enumerate(calls) if c.startswith("kubectl uncordon gpu-dev-0"))
    # uncordon is the last change, after verification; then only gpu-stack's own records are reset
    assert calls[uncordon + 1:] == ["kubectl annotate node gpu-dev-0 gpu-stack.io/cordoned-",
                                    "kubectl annotate --overwrite node gpu-dev-0 gpu-stack.io/rollout=none"]
    assert sb.state["driver_loaded"] == "570.195.03" and not sb.state["node"]["unschedulable"]
    assert "570.195.03" in results["upgrade-verify"].stdout


def test_second_run_on_an_upgraded_node_changes_nothing(upgraded_node):
    sb, new, _ = upgraded_node
    sb.clear_calls()
    tree = sb.tree()
    node_side = [p for p in upgrade_of(new) if p.name not in ("drain", "uncordon")]
    results = run_upgrade(sb, node_side)
    assert all(r.returncode == 0 for r in results.values())
    assert sb.mutating() == [] and sb.tree() == tree
    assert "GPU_STACK_REBOOT=0" in results["upgrade-reboot"].stdout


def test_the_bootstrap_phase_only_gates_a_version_change(tmp_path):
    from render.guest_scripts import gate_script
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(stack_file("dev"))
    converge(sb, phases)
    sb.clear_calls()
    _, new = phases_of(bumped(stack_file("dev"), driver="570.195.03"))
    driver = next(p for p in new if p.name == "driver")
    script = gate_script("driver", driver.params)
    import subprocess
    from render.guest_scripts import ssh_command
    env = {"PATH": f"{sb.bin}:/usr/local/bin:/usr/bin:/bin", "GS_ROOT": str(sb.root), "GS_SANDBOX": str(sb.tmp),
           "HOME": str(sb.tmp), "LANG": "C.UTF-8"}
    r = subprocess.run(["/bin/sh", "-c", ssh_command(script)], capture_output=True, text=True, env=env, cwd=sb.tmp)
    assert r.returncode == 0 and "left to the upgrade path" in r.stdout
    assert sb.mutating() == []


@pytest.mark.parametrize("fault, hint", [
    ({"uuid_offset": 1}, "not the ones there before the upgrade"),
    ({"lspci_gpus": 0}, "lists 0 GPUs"),
])
def test_failed_verification_leaves_the_node_cordoned(tmp_path, fault, hint):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(stack_file("dev"))
    converge(sb, phases)
    new = bumped(stack_file("dev"), driver="570.195.03")
    steps = upgrade_of(new)
    results = run_upgrade(sb, steps, stop_after="upgrade-reboot")
    assert all(r.returncode == 0 for r in results.values())
    sb.set_state(**fault)
    sb.clear_calls()
    verify = run_upgrade(sb, [p for p in steps if p.name == "upgrade-verify"])["upgrade-verify"]
    assert verify.returncode != 0
    assert hint in verify.stderr and "node gpu-dev-0, phase upgrade-verify" in verify.stderr
    assert "Seed 003 step 2" in verify.stderr and "stays cordoned" in verify.stderr
    assert sb.state["node"]["unschedulable"] is True
    assert not any(c.startswith("kubectl uncordon") for c in sb.mutating())


def test_fabric_not_completed_fails_verification(tmp_path):
    require_tool("openssl")
    raw = hgx("ubuntu", "570.172.08")
    sb = hgx_sandbox(tmp_path, "ubuntu", raw)
    _, phases = phases_of(raw)
    converge(sb, phases)
    steps = [p for p in upgrade_of(bumped(raw, driver="570.195.03"))]
    for p in steps:
        if p.name == "upgrade-verify":
            p.params["GS_FABRIC_TIMEOUT"] = "1"
            p.params["GS_GATE_INTERVAL"] = "1"
    results = run_upgrade(sb, steps, stop_after="upgrade-reboot")
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    sb.set_state(fabric_state="In Progress")
    verify = run_upgrade(sb, [p for p in steps if p.name == "upgrade-verify"])["upgrade-verify"]
    assert verify.returncode != 0 and "fabric state is not Completed" in verify.stderr


def test_drain_timeout_stops_with_the_node_cordoned(tmp_path):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(stack_file("dev"))
    converge(sb, phases)
    sb.set_state(drain_fails=True)
    sb.clear_calls()
    results = run_upgrade(sb, upgrade_of(bumped(stack_file("dev"), driver="570.195.03")))
    drain = results["drain"]
    assert drain.returncode != 0 and "fleet.drainTimeoutSeconds" in drain.stderr and "kubectl get pdb -A" in drain.stderr
    assert "upgrade-driver" not in results
    assert not any(c.startswith("apt-get install") for c in sb.mutating())


@pytest.mark.parametrize("target, message", [
    ("1.34.1", "set 1.33.x first"),
    ("1.31.9", "cannot downgrade"),
])
def test_node_refuses_what_kubeadm_cannot_do(tmp_path, target, message):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(stack_file("dev"))
    converge(sb, phases)
    sb.clear_calls()
    check = next(p for p in upgrade_of(bumped(stack_file("dev"), kubernetes=target)) if p.name == "upgrade-check")
    r = sb.run(check)
    assert r.returncode != 0 and "gpu-stack:kubernetes.version" in r.stderr and message in r.stderr
    assert sb.mutating() == []


def join_params(phase):
    if phase.name == "kubernetes":
        return {**phase.params, "GS_K8S_ENDPOINT": "192.168.122.10:6443", "GS_K8S_CA_HASH": "sha256:" + "ab" * 32}
    return phase.params


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
def test_kubernetes_upgrade_apply_on_the_control_plane_only(tmp_path, family):
    require_tool("openssl")
    raw = stack_file("dev")
    if family == "rhel":
        raw["guest"]["os"] = {"family": "rhel", "version": "9"}
    sb = GuestSandbox(tmp_path, family)
    _, phases = phases_of(raw)
    converge(sb, phases)
    sb.clear_calls()
    results = run_upgrade(sb, upgrade_of(bumped(raw, kubernetes="1.33.2")))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    calls = sb.mutating()
    joined = "\n".join(calls)
    assert "kubeadm upgrade plan v1.33.2" in joined and "kubeadm upgrade apply -y v1.33.2" in joined
    assert "kubeadm upgrade node" not in joined
    apply = next(i for i, c in enumerate(calls) if c.startswith("kubeadm upgrade apply"))
    drain = next(i for i, c in enumerate(calls) if c.startswith("kubectl drain"))
    kubelet = next(i for i, c in enumerate(calls) if ("kubelet" in c and c.startswith(("apt-get install", "dnf install"))))
    restart = next(i for i, c in enumerate(calls) if c == "systemctl restart kubelet")
    assert drain < apply < kubelet < restart
    assert sb.state["packages"]["kubelet"].startswith("1.33.2")
    if family == "rhel":
        assert "dnf versionlock delete kubeadm" in joined, "a locked package is unlocked before its pinned upgrade"
    assert "upgrade-reboot" in results and "GPU_STACK_REBOOT=0" in results["upgrade-reboot"].stdout
    assert all(TOKEN not in r.stdout + r.stderr for r in results.values()), "the token stays on stdin"


def test_drain_says_so_when_the_api_server_does_not_answer(tmp_path):
    require_tool("openssl")
    raw = stack_file("dev")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(raw, role="join")
    converge(sb, phases, join_params)
    (sb.root / "etc/kubernetes/admin.conf").write_text("apiVersion: v1\nkind: Config\n")
    steps = upgrade_of(bumped(raw, kubernetes="1.33.2"), role="join", control_plane=False)
    # upgrade-check records its decision on the Node (the kubelet's credentials): it needs the API server too
    sb.set_state(api_down=True)
    check = run_upgrade(sb, steps[:1])["upgrade-check"]
    assert check.returncode != 0 and "cannot read node gpu-dev-0 from the API server" in check.stderr
    sb.set_state(api_down=False)
    assert run_upgrade(sb, steps[:1])["upgrade-check"].returncode == 0
    sb.set_state(api_down=True)
    sb.clear_calls()
    result = run_upgrade(sb, steps[1:])["drain"]
    assert result.returncode != 0
    assert "the API server does not answer (kubectl version: The connection to the server 10.0.0.10:6443 was refused" in result.stderr
    assert "seed 003 step 1" in result.stderr and not [c for c in sb.mutating() if c.startswith("kubectl cordon")]


def test_kubernetes_upgrade_node_on_a_joined_node(tmp_path):
    require_tool("openssl")
    raw = stack_file("dev")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(raw, role="join")
    converge(sb, phases, join_params)
    # drain and uncordon run on the control plane: give this sandbox its admin kubeconfig
    (sb.root / "etc/kubernetes/admin.conf").write_text("apiVersion: v1\nkind: Config\n")
    steps = upgrade_of(bumped(raw, kubernetes="1.33.2"), role="join", control_plane=False)
    sb.clear_calls()
    refused = run_upgrade(sb, steps)
    assert refused["drain"].returncode != 0 and "the control plane is upgraded first" in refused["drain"].stderr
    sb.set_state(server_version="1.33.2")
    sb.clear_calls()
    results = run_upgrade(sb, steps)
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    joined = "\n".join(sb.mutating())
    assert "kubeadm upgrade node" in joined and "kubeadm upgrade apply" not in joined


@pytest.mark.parametrize("family, new_names, unlocked", [
    ("ubuntu", ["nvidia-fabricmanager-580", "libnvidia-nscq-580"], None),
    ("rhel", ["nvidia-fabricmanager-580.95.05", "libnvidia-nscq-580.95.05"], "dnf versionlock delete nvidia-fabric-manager"),
])
def test_branch_upgrade_570_to_580_on_hgx_switches_the_fabric_manager_names(tmp_path, family, new_names, unlocked):
    require_tool("openssl")
    raw = hgx(family, "570.172.08")
    sb = hgx_sandbox(tmp_path, family, raw)
    _, phases = phases_of(raw)
    converge(sb, phases)
    sb.clear_calls()
    results = run_upgrade(sb, upgrade_of(bumped(raw, driver="580.95.05")))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    calls = sb.mutating()
    installs = [c for c in calls if c.startswith(("apt-get install", "dnf install"))]
    assert any(all(n in c for n in new_names) for c in installs), installs
    if unlocked:
        assert unlocked in calls
    assert sb.state["driver_loaded"] == "580.95.05"
    assert any(c.endswith("systemctl reboot") for c in calls)




def test_mode_join_needs_the_kubeconfig_its_drains_use():
    raw = three_nodes()
    raw["kubernetes"] = {"version": "1.32.4", "mode": "join", "nodeTaints": [],
                         "join": {"controlPlaneEndpoint": "10.0.0.10:6443", "caCertHash": "sha256:" + "a" * 64}}
    raw["addons"] = {"monitoring": {"enabled": False}, "podNetwork": {"enabled": False}}
    with pytest.raises(ConfigError) as e:
        parse_stack_config(raw, {"sshPrivateKey", "joinToken"})
    kube = [i for i in e.value.issues if i.path == "kubeconfig"]
    assert len(kube) == 1 and "drain" in kube[0].message
    with pytest.raises(ConfigError) as e:
        parse_stack_config(raw, {"sshPrivateKey", "joinToken", "kubeconfig"})
    assert not any(i.path == "kubeconfig" for i in e.value.issues)


def test_mode_existing_refuses_an_undrained_upgrade(tmp_path):
    raw = copy.deepcopy(stack_file("dev"))
    raw["kubernetes"]["mode"] = "existing"
    cfg, _ = parse_stack_config(raw, SECRETS)
    phases = guest_phases(cfg.vms[0], cfg.guest, cfg.kubernetes, "none")

    def steps(fleet):
        return upgrade_phases(cfg.vms[0], phases, fleet, "none", False, "nvidia.com/gpu", 1, "", kubeconfig_on_stdin=True, in_cluster=True)
    assert [p.name for p in steps(cfg.fleet)] == ["upgrade-check", "upgrade-driver", "upgrade-runtime", "upgrade-reboot", "upgrade-verify"]
    sb = GuestSandbox(tmp_path, "ubuntu")
    r = sb.run(steps(cfg.fleet)[0])
    assert r.returncode != 0 and "fleet.drainedExternally" in r.stderr and sb.mutating() == []
    r = sb.run(steps(cfg.fleet.model_copy(update={"drained_externally": True}))[0])
    assert r.returncode == 0


def test_plan_with_base_says_a_stack_new_at_base_is_new(tmp_path):
    """A stack whose Pulumi.<stack>.yaml is not at BASE is created, not upgraded: the summary says so, never
    `wave 0: <node> (nothing)`."""
    import json
    import subprocess

    from tools.plan import plan_config, rollout_json
    _base_repo(tmp_path, three_nodes(2))
    subprocess.run(["git", "-C", str(tmp_path), "mv", "Pulumi.t.yaml", "Pulumi.old.yaml"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "rename"], check=True)
    raw = three_nodes(2)
    values, secret_keys = plan_config({f"gpu-stack:{k}": v for k, v in raw.items()})
    doc = json.loads(rollout_json("t", values, secret_keys, run_stack(raw), base="HEAD", root=tmp_path))
    assert doc["newAtBase"] is True and doc["base"] == "HEAD"
    assert doc["summary"] == ["new stack: Pulumi.t.yaml does not exist at HEAD; the first `pulumi up` creates every resource "
                              "(2 waves of nodes), nothing is upgraded"]
    assert not any("(nothing)" in line for line in doc["summary"])


# --- issue 26 item 1: a gpu-stack release is not a rollout ------------------------------------
# Every upgrade phase inlines lib.sh, so a gpu-stack release that edits it re-runs each node's whole
# upgrade path with the versions unchanged. The node decides from what it runs that there is nothing to do.

ROLL = ("kubectl cordon", "kubectl drain", "kubectl uncordon", "apt-get install", "dnf install", "kubeadm upgrade",
        "systemd-run", "systemctl restart kubelet")


def converged_node(tmp_path, raw=None) -> GuestSandbox:
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    _, phases = phases_of(raw or stack_file("dev"))
    converge(sb, phases)
    sb.clear_calls()
    return sb


def annotations(sb: GuestSandbox) -> dict[str, str]:
    """The rollout's records on the Node (the drift records, gpu-stack.io/expected-* and gpu-uuids, are test_drift.py's)."""
    return {k: v for k, v in sb.state["node"].get("annotations", {}).items() if k in ("gpu-stack.io/rollout", "gpu-stack.io/cordoned")}


def test_a_release_alone_rolls_nothing(tmp_path):
    """(a) The same versions, every upgrade phase re-run: no cordon, drain, package, reboot or uncordon."""
    sb = converged_node(tmp_path)
    tree = sb.tree()
    results = run_upgrade(sb, upgrade_of(stack_file("dev")))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    assert list(results) == list(NODE_STEPS), "every phase ran (and passed)"
    calls = sb.mutating()
    assert not [c for c in calls if c.startswith(ROLL)], calls
    assert not sb.state["node"].get("unschedulable") and not sb.state["node"].get("drained")
    assert "GPU_STACK_ROLLOUT=none" in results["upgrade-check"].stdout
    assert annotations(sb) == {"gpu-stack.io/rollout": "none"}
    # what it wrote: the decision on the node and on its Node object, nothing else
    assert calls == ["kubectl annotate --overwrite node gpu-dev-0 gpu-stack.io/rollout=none"]
    assert set(sb.tree()) == set(tree), "the node's record already said none (bootstrap verify wrote it)"
    assert (sb.root / "var/lib/gpu-stack/upgrade/rollout").read_text() == "none\n"
    assert "GPU_STACK_REBOOT=0" in results["upgrade-reboot"].stdout
    assert "unchanged (nothing to roll out)" in results["uncordon"].stdout
    # and again: nothing at all
    sb.clear_calls()
    again = run_upgrade(sb, upgrade_of(stack_file("dev")))
    assert all(r.returncode == 0 for r in again.values()) and sb.mutating() == []


def test_a_release_that_edits_only_the_reboot_step_does_not_reboot_a_fresh_node(tmp_path):
    """upgrade-reboot re-runs alone when only its script changed (its triggers: itself and upgrade-driver): on a node
    bootstrapped since, the record says none (bootstrap verify), so it skips even where the loaded and the
    installed driver module differ, which would otherwise reboot an undrained node."""
    sb = converged_node(tmp_path)
    assert (sb.root / "var/lib/gpu-stack/upgrade/rollout").read_text() == "none\n"
    sb.set_state(driver_loaded="570.100.00")  # e.g. an unattended package update, not yet booted into
    steps = {p.name: p for p in upgrade_of(stack_file("dev"))}
    result = sb.run(steps["upgrade-reboot"])
    assert result.returncode == 0 and "GPU_STACK_REBOOT=0" in result.stdout
    assert not [c for c in sb.mutating() if c.startswith(ROLL) or "reboot" in c], sb.mutating()


def test_a_version_change_still_drains_and_then_resets_the_records(upgraded_node):
    """(b) A driver bump: cordon (recorded), drain, upgrade, verify, uncordon; afterwards both records say so."""
    sb, new, results = upgraded_node
    assert "GPU_STACK_ROLLOUT=driver 570.172.08->570.195.03" in results["upgrade-check"].stdout
    calls = [c for c in sb.mutating() if "gpu-stack.io/expected-" not in c]  # the drift records: test_drift.py
    assert calls[:4] == ["kubectl annotate --overwrite node gpu-dev-0 gpu-stack.io/rollout=driver 570.172.08->570.195.03",
                         "kubectl annotate --overwrite node gpu-dev-0 gpu-stack.io/cordoned=true",
                         "kubectl cordon gpu-dev-0",
                         "kubectl drain gpu-dev-0 --ignore-daemonsets --delete-emptydir-data --timeout=900s"]
    assert annotations(sb) == {"gpu-stack.io/rollout": "none"} and not sb.state["node"]["unschedulable"]
    # the next release re-runs the path: nothing rolls
    sb.clear_calls()
    again = run_upgrade(sb, upgrade_of(new))
    assert all(r.returncode == 0 for r in again.values()) and sb.mutating() == []


def test_a_node_an_admin_cordoned_stays_cordoned(tmp_path):
    """(c) Cordoned by hand before: a release leaves it alone; a real upgrade drains it and leaves it cordoned."""
    sb = converged_node(tmp_path)
    sb.set_state(node={**sb.state["node"], "unschedulable": True})
    results = run_upgrade(sb, upgrade_of(stack_file("dev")))
    assert all(r.returncode == 0 for r in results.values())
    assert not [c for c in sb.mutating() if c.startswith(ROLL)] and sb.state["node"]["unschedulable"] is True
    sb.clear_calls()
    results = run_upgrade(sb, upgrade_of(bumped(stack_file("dev"), driver="570.195.03")))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    calls = sb.mutating()
    assert any(c.startswith("kubectl drain gpu-dev-0") for c in calls) and sb.state["driver_loaded"] == "570.195.03"
    assert not any(c.startswith(("kubectl cordon", "kubectl uncordon")) for c in calls), calls
    assert "gpu-stack.io/cordoned=true" not in "\n".join(calls)
    assert sb.state["node"]["unschedulable"] is True, "an admin's cordon is the admin's to lift"
    assert "left cordoned (cordoned before gpu-stack's drain, not by gpu-stack" in results["uncordon"].stdout
    assert annotations(sb) == {"gpu-stack.io/rollout": "none"}


@pytest.mark.parametrize("next_run", ["failed and later phases", "whole path"])
def test_a_run_that_failed_after_the_drain_is_uncordoned_by_the_next(tmp_path, next_run):
    """(d) The drain cordoned, verification failed: the next successful run uncordons, whether Pulumi re-runs
    only the failed phase and what follows it, or (a later release) the whole path, which then drains nothing."""
    sb = converged_node(tmp_path)
    steps = upgrade_of(bumped(stack_file("dev"), driver="570.195.03"))
    first = run_upgrade(sb, steps, stop_after="upgrade-reboot")
    assert all(r.returncode == 0 for r in first.values())
    sb.set_state(lspci_gpus=0)  # a GPU that did not come back
    assert run_upgrade(sb, [p for p in steps if p.name == "upgrade-verify"])["upgrade-verify"].returncode != 0
    assert sb.state["node"]["unschedulable"] is True and annotations(sb)["gpu-stack.io/cordoned"] == "true"
    sb.set_state(lspci_gpus=1)  # fixed
    sb.clear_calls()
    again = steps[steps.index(next(p for p in steps if p.name == "upgrade-verify")):] if next_run != "whole path" else steps
    results = run_upgrade(sb, again)
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    calls = sb.mutating()
    assert not any(c.startswith(("kubectl drain", "kubectl cordon", "apt-get install", "systemd-run")) for c in calls), calls
    assert "kubectl uncordon gpu-dev-0" in calls and sb.state["node"]["unschedulable"] is False
    assert annotations(sb) == {"gpu-stack.io/rollout": "none"}


def test_mode_existing_release_alone_needs_no_external_drain(tmp_path):
    """mode existing: a release that changes no version is no upgrade the admin has to drain for."""
    raw = copy.deepcopy(stack_file("dev"))
    raw["kubernetes"]["mode"] = "existing"
    cfg, _ = parse_stack_config(raw, SECRETS)
    phases = guest_phases(cfg.vms[0], cfg.guest, cfg.kubernetes, "none")
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    converge(sb, phases)
    sb.clear_calls()
    steps = upgrade_phases(cfg.vms[0], phases, cfg.fleet, "none", False, "nvidia.com/gpu", 1, "", kubeconfig_on_stdin=True, in_cluster=True)
    results = run_upgrade(sb, steps)
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items() if r.returncode}
    assert not [c for c in sb.mutating() if c.startswith(ROLL)]


# --- rollout.json across a gpu-stack release (issue 26 item 1) --------------------------------------------

def _program_repo(tmp_path):
    """A git repository holding this gpu-stack (tracked and new files, tests/ left out) at HEAD: the deployed release."""
    import shutil
    import subprocess

    require_tool("git")
    repo = tmp_path / "repo"
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in names:
        src = ROOT / name
        if not name or name.startswith("tests/") or not src.is_file() or src.is_symlink():
            continue
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, repo / name)
    _git(repo, "init", "-q")
    _commit(repo, "release 1")
    return repo


def _git(repo, *args):
    import subprocess
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)


def _commit(repo, message):
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message)


def _plan_with_base(repo, stack: str, base: str) -> dict:
    """`make plan STACK=<stack> BASE=<base>` run by the repository's own gpu-stack: its rollout.json."""
    import json
    import subprocess
    import sys

    out = repo.parent / "out"
    proc = subprocess.run([sys.executable, "-m", "tools.plan", stack, "--out", str(out), "--stack-dir", str(repo), "--base", base],
                          cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / stack / "rollout.json").read_text())


def test_a_release_that_edits_lib_sh_drains_no_node(tmp_path):
    """Only gpu-stack's scripts change (lib.sh), not the config: every node's upgrade commands re-run, and rollout.json
    says "re-run, no drain" for each (upgrade-check finds nothing to change); then a driver bump drains, in waves."""
    repo = _program_repo(tmp_path)
    lib = repo / "scripts" / "guest" / "lib.sh"
    lib.write_text(lib.read_text() + "\n# release 2: a comment is enough to change every rendered phase script\n")
    _commit(repo, "release 2: lib.sh")
    doc = _plan_with_base(repo, "fleet", "HEAD~1")
    nodes = [e for w in doc["waves"] for e in w["nodes"]]
    assert len(nodes) == 5 and "planned with HEAD~1's gpu-stack" in doc["baseCode"]  # cp-1 and the four GPU VMs
    for e in nodes:
        assert "upgrade-check" in [p["phase"] for p in e["phases"]], e  # the release does re-run the upgrade path
        assert e["action"] == "re-run, no drain" and e["changes"] == [] and "replace" not in e
    assert all(line.count("re-run, no drain") == len(line.split("), ")) for line in doc["summary"])

    fleet = repo / "Pulumi.fleet.yaml"
    old = fleet.read_text()
    assert "driverVersion: 580.173.02" in old
    fleet.write_text(old.replace("driverVersion: 580.173.02", "driverVersion: 580.195.03"))
    doc = _plan_with_base(repo, "fleet", "HEAD")
    assert [[e["node"] for e in w["nodes"]] for w in doc["waves"]] == [["cp-1"], ["gpu-1-0"], ["gpu-1-1"], ["gpu-2-0"], ["gpu-2-1"]]
    cp = doc["waves"][0]["nodes"][0]
    assert cp["action"] == "nothing to run" and cp["changes"] == [], cp  # the control plane has no GPUs: no driver, no command changes
    for w in doc["waves"][1:]:
        for e in w["nodes"]:
            assert e["action"] == "drain, change driver 580.173.02→580.195.03", e
            assert [p["phase"] for p in e["phases"]] == ["upgrade-check", "drain", "upgrade-driver", "upgrade-reboot", "upgrade-verify", "burn-in",
                                                         "uncordon"]  # issue 27: a GPU node burns in before it is uncordoned


def test_a_stylesheet_change_is_a_vm_replacement_not_a_no_drain(tmp_path):
    """A release whose domain stylesheet differs replaces each libvirt domain (xml.xslt is ForceNew): a restart, so
    rollout.json says "replace VM (restart)", never "no drain"."""
    repo = _program_repo(tmp_path)
    xslt = repo / "hypervisors" / "libvirt" / "domain_xslt.py"
    text = xslt.read_text()
    assert "<xsl:output " in text
    xslt.write_text(text.replace("<xsl:output ", "<!-- release 2 --><xsl:output ", 1))
    _commit(repo, "release 2: stylesheet")
    doc = _plan_with_base(repo, "fleet", "HEAD~1")
    for e in (e for w in doc["waves"] for e in w["nodes"]):
        assert e["action"] == "replace VM (restart)" and "xml changed" in e["replace"] and "ForceNew" in e["replace"], e
