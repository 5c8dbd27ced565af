"""Guest phase scripts: shellcheck, then executed for real in a sandbox with recording stubs.

A fresh host gets the expected mutating calls; a converged host (the second
run) gets none and its files stay byte-identical. Both distro families.
"""

from __future__ import annotations

import base64
import subprocess
import tomllib
from pathlib import Path

import pytest

from render.guest_scripts import SCRIPTS, guest_phases, render_script, ssh_command, teardown_script
from render.identity import split_kubeconfig_output
from render.verify_output import parse_verify_output
from stacks.load import parse_stack_config
from tests.conftest import ROOT, hgx_board, require_tool, stack_file
from tests.support.guest_sandbox import GuestSandbox

TOKEN = "abcdef.0123456789abcdef"
SECRETS = {"sshPrivateKey", "grafanaAdminPassword", "joinToken", "registryPassword", "kubeconfig"}


def config(family: str = "ubuntu", **guest_overrides):
    raw = stack_file("dev")
    if family == "rhel":
        raw["guest"]["os"] = {"family": "rhel", "version": "9"}
    raw["guest"].update(guest_overrides)
    return raw


def phases_for(raw: dict, role: str = "init", vm_index: int = 0):
    cfg, _ = parse_stack_config(raw, SECRETS)
    return guest_phases(cfg.vms[vm_index], cfg.guest, cfg.kubernetes, role)


def run_all(sb: GuestSandbox, phases, stdin: dict[str, str] | None = None) -> dict[str, subprocess.CompletedProcess]:
    stdin = stdin or {"joinToken": TOKEN + "\n"}
    results = {}
    for phase in phases:
        result = sb.run(phase, stdin=stdin.get(phase.stdin_secret or "", ""))
        results[phase.name] = result
        assert result.returncode == 0, f"{phase.name} failed:\n{result.stdout}\n{result.stderr}"
    return results


# --- shellcheck ---------------------------------------------------------------

def _shellcheck(paths: list[Path]) -> None:
    tool = require_tool("shellcheck")
    proc = subprocess.run([tool, "-x", "-s", "bash", *map(str, paths)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_script_sources_are_shellcheck_clean():
    _shellcheck(sorted(SCRIPTS.glob("*.sh")) + sorted((ROOT / "scripts").glob("*.sh")) + [ROOT / ".ci" / "run"])


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
def test_rendered_phases_and_wrappers_are_shellcheck_clean(family, tmp_path):
    raw = config(family, proxy={"http": "http://100.64.0.5:8888", "https": "http://100.64.0.5:8888"},
                 registryMirrors=[{"registry": "nvcr.io", "endpoint": "https://harbor.lab/v2/nvcr"}], registryUsername="robot",
                 nvidia={"driverVersion": "570.172.08", "installMethod": "runfile", "runfileUrl": "https://mirror/NVIDIA.run",
                         "cuda": {"version": "12.8.1", "runfileUrl": "https://mirror/cuda.run"}})
    paths = []
    for phase in phases_for(raw):
        script = tmp_path / f"{phase.name}.sh"
        script.write_text(render_script(phase.name, phase.params))
        wrapper = tmp_path / f"{phase.name}.ssh.sh"
        wrapper.write_text("#!/bin/sh\n" + ssh_command(script.read_text()))
        paths += [script]
    _shellcheck(paths)
    tool = require_tool("shellcheck")
    for phase in phases_for(raw):
        proc = subprocess.run([tool, "-s", "sh", str(tmp_path / f"{phase.name}.ssh.sh")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


# --- fresh host, then converged host -----------------------------------------------

@pytest.fixture(scope="module", params=["ubuntu", "rhel"])
def converged(request, tmp_path_factory):
    require_tool("openssl")
    family = request.param
    sb = GuestSandbox(tmp_path_factory.mktemp(family), family)
    phases = phases_for(config(family))
    first = run_all(sb, phases)
    first_calls = sb.mutating()
    sb.clear_calls()
    tree = sb.tree()
    second = run_all(sb, phases)
    return {"family": family, "sb": sb, "first": first, "first_calls": first_calls, "second": second,
            "second_calls": sb.mutating(), "tree_before": tree, "tree_after": sb.tree()}


def test_fresh_host_gets_the_node_it_needs(converged):
    calls = "\n".join(converged["first_calls"])
    family = converged["family"]
    assert "swapoff -a" in calls
    assert "modprobe br_netfilter" in calls and "sysctl --system" in calls
    assert ("update-initramfs -u" if family == "ubuntu" else "dracut -f") in calls
    assert "modprobe -r nouveau" in calls and "systemctl reboot" not in calls
    if family == "ubuntu":
        assert "apt-get install" in calls and "nvidia-headless-580-server" in calls
        assert "apt-mark hold kubeadm" in calls
    else:
        assert "nvidia-driver-cuda-580.173.02" in calls and "kubeadm-1.36.5" in calls
        assert "dnf versionlock add kubelet" in calls
        assert "setenforce 0" in calls and "systemctl disable --now firewalld" in calls
    init = next(c for c in converged["first_calls"] if c.startswith("kubeadm init"))
    assert init.startswith("kubeadm init --kubernetes-version v1.36.5") and "--token-ttl 1h0m0s" in init
    assert "--token " not in init and "--token-ttl 0" not in calls and "kubeadm token create" not in calls
    assert "kubectl taint node gpu-dev-0 node-role.kubernetes.io/control-plane:NoSchedule-" in calls
    assert "kubectl label --overwrite node gpu-dev-0 nvidia.com/gpu.present=true" in calls
    assert "nvidia-smi -pm 1" in calls
    state = converged["sb"].state
    assert state["driver_loaded"] == "580.173.02"
    toolkit = state["packages"]["nvidia-container-toolkit"]
    assert toolkit.startswith("1.20.0"), f"toolkit pinned to 1.20.0, got {toolkit}"
    kubeadm = state["packages"]["kubeadm"]
    assert kubeadm.startswith("1.36.5"), f"kubeadm pinned to 1.36.5, got {kubeadm}"


def test_fresh_host_files(converged):
    root = converged["sb"].root
    assert (root / "etc/fstab").read_text().splitlines()[1].startswith("#/swap.img")
    assert "blacklist nouveau" in (root / "etc/modprobe.d/blacklist-nouveau.conf").read_text()
    config_toml = (root / "etc/containerd/config.toml").read_text()
    assert "SystemdCgroup = true" in config_toml and "runtimes.nvidia" in config_toml
    assert 'default_runtime_name = "runc"' in config_toml, "nvidia is used through a RuntimeClass, not as the default"
    assert "config_path = '/etc/containerd/certs.d'" in config_toml
    assert not (root / "etc/systemd/system/containerd.service.d/http-proxy.conf").exists()


def test_converged_host_changes_nothing(converged):
    assert converged["second_calls"] == []
    assert converged["tree_after"] == converged["tree_before"]
    assert all("changed:" not in r.stdout for r in converged["second"].values())


def test_secrets_never_reach_stdout(converged):
    for result in (*converged["first"].values(), *converged["second"].values()):
        assert TOKEN not in result.stdout + result.stderr


def test_verify_output_parses_into_the_inventory(converged):
    inventory = parse_verify_output(converged["second"]["verify"].stdout)
    assert inventory["driverVersion"] == "580.173.02" and inventory["cudaVersion"] == "12.8"
    assert [g["busId"] for g in inventory["gpus"]] == ["00000000:01:00.0"]


def test_kubeconfig_output_carries_the_ca_hash_joining_nodes_pin(converged):
    config_text, ca_hash = split_kubeconfig_output(converged["second"]["kubeconfig"].stdout)
    assert "kind: Config" in config_text and "gpu-stack-ca-cert-hash" not in config_text
    cert = converged["sb"].root / "etc/kubernetes/pki/ca.crt"
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(cert)], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True).stdout
    import hashlib
    assert ca_hash == "sha256:" + hashlib.sha256(der).hexdigest()


# --- scenarios -----------------------------------------------------------------

def _phase(phases, name):
    return next(p for p in phases if p.name == name)


def test_nouveau_in_use_reboots_once_and_closes_ssh(tmp_path):
    sb = GuestSandbox(tmp_path, "ubuntu", nouveau_in_use=True)
    result = sb.run(_phase(phases_for(config()), "nouveau"))
    assert result.returncode == 0 and "GPU_STACK_REBOOT=1" in result.stdout
    calls = sb.mutating()
    assert any(c.startswith("systemd-run --on-active=5") and c.endswith("systemctl reboot") for c in calls)
    assert "systemctl stop ssh.socket ssh.service sshd.service" in calls, "the next phase must not reach the old boot"


def test_nouveau_absent_never_reboots(tmp_path):
    sb = GuestSandbox(tmp_path, "ubuntu", modules=["drm"])
    phase = _phase(phases_for(config()), "nouveau")
    assert "GPU_STACK_REBOOT=0" in sb.run(phase).stdout
    sb.clear_calls()
    assert "GPU_STACK_REBOOT=0" in sb.run(phase).stdout
    assert sb.mutating() == [], "blacklisted already and not loaded: nothing to do"


@pytest.mark.parametrize("state, message", [
    ({"lspci_gpus": 0}, "lspci shows 0 NVIDIA GPUs, the config passes through 1"),
    ({"df_avail_kib": 20 * 1024 * 1024}, "/ has 20 GiB free, 50 GiB needed"),
    ({"secure_boot": True}, "Secure Boot is on in the guest"),
])
def test_preflight_failures_say_what_to_fix(tmp_path, state, message):
    sb = GuestSandbox(tmp_path, "ubuntu", **state)
    result = sb.run(_phase(phases_for(config()), "preflight"))
    assert result.returncode != 0 and message in result.stderr
    assert sb.mutating() == []


def test_preflight_refuses_another_os(tmp_path):
    sb = GuestSandbox(tmp_path, "rhel")
    result = sb.run(_phase(phases_for(config("ubuntu")), "preflight"))
    assert result.returncode != 0 and "config guest.os.family is ubuntu" in result.stderr


def test_join_pins_the_ca_and_does_not_rejoin(tmp_path):
    raw = config()
    raw["kubernetes"] = {"version": "1.32.4", "mode": "join",
                         "join": {"controlPlaneEndpoint": "10.0.0.10:6443", "caCertHash": "sha256:" + "a" * 64}}
    phase = _phase(phases_for(raw, role="join"), "kubernetes")
    sb = GuestSandbox(tmp_path, "ubuntu")
    first = sb.run(phase, stdin=TOKEN + "\n")
    assert first.returncode == 0, first.stderr
    joins = [c for c in sb.mutating() if c.startswith("kubeadm join")]
    assert joins == [f"kubeadm join 10.0.0.10:6443 --token {TOKEN} --discovery-token-ca-cert-hash sha256:{'a' * 64} "
                     "--node-name gpu-dev-0 --cri-socket unix:///run/containerd/containerd.sock"]
    assert "unsafe" not in joins[0]
    kubelet_args = (sb.root / "etc/default/kubelet").read_text()
    assert "--node-labels=nvidia.com/gpu.present=true" in kubelet_args
    sb.clear_calls()
    assert sb.run(phase, stdin=TOKEN + "\n").returncode == 0
    assert sb.mutating() == []


def test_join_without_token_on_stdin_fails(tmp_path):
    raw = config()
    raw["kubernetes"] = {"version": "1.32.4", "mode": "join",
                         "join": {"controlPlaneEndpoint": "10.0.0.10:6443", "caCertHash": "sha256:" + "a" * 64}}
    result = GuestSandbox(tmp_path, "ubuntu").run(_phase(phases_for(raw, role="join"), "kubernetes"))
    assert result.returncode != 0 and "no bootstrap token arrived on stdin" in result.stderr


def test_runfile_driver_and_cuda_toolkit_use_seed001_flags(tmp_path):
    raw = config("rhel", nvidia={"driverVersion": "535.261.03", "installMethod": "runfile",
                                 "runfileUrl": "https://mirror.lab/NVIDIA-Linux-x86_64-535.261.03.run",
                                 "cuda": {"version": "12.2.2", "runfileUrl": "https://mirror.lab/cuda_12.2.2_535.104.05_linux.run"}})
    phases = phases_for(raw)
    sb = GuestSandbox(tmp_path, "rhel")
    for name in ("driver", "cuda"):
        result = sb.run(_phase(phases, name))
        assert result.returncode == 0, result.stderr
    calls = sb.mutating()
    installer = next(c for c in calls if c.startswith("sh ") and "NVIDIA-Linux" in c)
    assert "--silent --dkms --accept-license --no-questions" in installer
    cuda = next(c for c in calls if c.startswith("sh ") and "/cuda_12.2.2_" in c)
    assert "--toolkit" in cuda and "--driver" not in cuda
    assert sb.state["driver_loaded"] == "535.261.03"
    sb.clear_calls()
    for name in ("driver", "cuda"):
        assert sb.run(_phase(phases, name)).returncode == 0
    assert sb.mutating() == []


def test_nvswitches_get_fabric_manager_at_the_driver_version(tmp_path):
    raw = config()
    raw["vms"][0]["gpus"], raw["vms"][0]["nvswitches"] = hgx_board("H800-SXM5-80GB")  # a whole board: 8 GPUs, 4 NVSwitches
    phases = phases_for(raw)
    sb = GuestSandbox(tmp_path, "ubuntu", lspci_gpus=8, lspci_nvswitches=4)
    for name in ("preflight", "driver"):
        assert sb.run(_phase(phases, name)).returncode == 0
    state = sb.state
    assert state["packages"]["nvidia-fabricmanager-580"] == "580.173.02-1"
    assert state["units"]["nvidia-fabricmanager"] == {"enabled": True, "active": True}


def test_docker_runtime_is_nvidia_by_default_like_seed001(tmp_path):
    raw = config("rhel", containerRuntime={"name": "docker"})
    raw["kubernetes"]["version"] = "1.23.17"
    raw["kubernetes"]["packageRepository"] = "https://mirror.lab/kubernetes/v1.23"
    raw["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0", "deploy": "static"}
    sb = GuestSandbox(tmp_path, "rhel")
    assert sb.run(_phase(phases_for(raw), "container-runtime")).returncode == 0
    import json
    daemon = json.loads((sb.root / "etc/docker/daemon.json").read_text())
    assert daemon["default-runtime"] == "nvidia"
    assert daemon["exec-opts"] == ["native.cgroupdriver=systemd"]


def test_registry_password_goes_to_hosts_toml_only(tmp_path):
    password = "s3cret-harbor"
    raw = config(registryMirrors=[{"registry": "nvcr.io", "endpoint": "https://harbor.lab/v2/nvcr"}], registryUsername="robot",
                 proxy={"https": "http://100.64.0.5:8888"})
    phase = _phase(phases_for(raw), "container-runtime")
    assert phase.stdin_secret == "registryPassword"
    assert password not in render_script(phase.name, phase.params)
    sb = GuestSandbox(tmp_path, "ubuntu")
    result = sb.run(phase, stdin=password + "\n")
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    hosts = sb.root / "etc/containerd/certs.d/nvcr.io/hosts.toml"
    parsed = tomllib.loads(hosts.read_text())
    assert parsed["server"] == "https://nvcr.io"
    mirror = parsed["host"]["https://harbor.lab/v2/nvcr"]
    assert mirror["capabilities"] == ["pull", "resolve"]
    assert base64.b64decode(mirror["header"]["Authorization"][0].removeprefix("Basic ")) == f"robot:{password}".encode()
    assert oct(hosts.stat().st_mode & 0o777) == "0o600"
    proxy = (sb.root / "etc/systemd/system/containerd.service.d/http-proxy.conf").read_text()
    assert 'HTTPS_PROXY=http://100.64.0.5:8888' in proxy and "NO_PROXY=127.0.0.1,localhost" in proxy


def test_teardown_resets_a_joined_node_and_only_then(tmp_path):
    cfg, _ = parse_stack_config(config(), SECRETS)
    script = teardown_script(cfg.vms[0])
    sb = GuestSandbox(tmp_path, "ubuntu")
    wrapper = ["/bin/sh", "-c", ssh_command(script)]
    env = {"PATH": f"{sb.bin}:/usr/bin:/bin", "GS_ROOT": str(sb.root), "GS_SANDBOX": str(sb.tmp)}
    assert subprocess.run(wrapper, env=env, capture_output=True).returncode == 0
    assert sb.mutating() == [], "never joined: nothing to reset"
    (sb.root / "etc/kubernetes").mkdir(parents=True)
    (sb.root / "etc/kubernetes/kubelet.conf").write_text("x")
    assert subprocess.run(wrapper, env=env, capture_output=True).returncode == 0
    assert sb.mutating() == ["kubeadm reset -f"]


# --- Docker's package repository -------------------------------------------------------------

def docker_config(family: str, **runtime) -> dict:
    raw = config(family, containerRuntime={"name": "docker", **runtime}, proxy={"https": "http://100.64.0.5:8888"})
    raw["kubernetes"]["version"] = "1.23.17"
    raw["kubernetes"]["packageRepository"] = "https://mirror.lab/kubernetes/v1.23"
    raw["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0", "deploy": "static"}
    return raw


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
def test_docker_path_adds_dockers_repository_before_installing_docker_ce(tmp_path, family):
    sb = GuestSandbox(tmp_path, family)
    phase = _phase(phases_for(docker_config(family)), "container-runtime")
    result = sb.run(phase)
    assert result.returncode == 0, result.stderr
    calls = sb.mutating()
    install = next(i for i, c in enumerate(calls) if "docker-ce" in c and (c.startswith("apt-get install") or c.startswith("dnf install")))
    if family == "ubuntu":
        key = next(i for i, c in enumerate(calls) if c.startswith("gpg --dearmor"))
        assert key < install
        fetch = next(c for c in sb.calls() if c["cmd"] == "curl")
        assert fetch["argv"][-1] == "https://download.docker.com/linux/ubuntu/gpg"
        source = (sb.root / "etc/apt/sources.list.d/docker.list").read_text()
        assert source == "deb [signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/ubuntu noble stable\n"
    else:
        repo = (sb.root / "etc/yum.repos.d/docker-ce.repo").read_text()
        # Rocky is not RHEL: Docker publishes its EL builds for it under centos/
        assert "baseurl=https://download.docker.com/linux/centos/$releasever/$basearch/stable\n" in repo
        assert "gpgkey=https://download.docker.com/linux/centos/gpg\n" in repo and "gpgcheck=1" in repo
    sb.clear_calls()
    tree = sb.tree()
    assert sb.run(phase).returncode == 0
    assert sb.mutating() == [] and sb.tree() == tree


def test_docker_repository_mirror_is_used(tmp_path):
    sb = GuestSandbox(tmp_path, "ubuntu")
    phase = _phase(phases_for(docker_config("ubuntu", dockerRepository="https://mirror.lab/docker-ce/linux")), "container-runtime")
    assert sb.run(phase).returncode == 0
    assert "https://mirror.lab/docker-ce/linux/ubuntu noble stable" in (sb.root / "etc/apt/sources.list.d/docker.list").read_text()
    assert not any("download.docker.com" in c["argv"][-1] for c in sb.calls() if c["cmd"] == "curl")
    assert "https://mirror.lab/docker-ce/linux/ubuntu/gpg" in [c["argv"][-1] for c in sb.calls() if c["cmd"] == "curl"]


def test_containerd_on_el_gets_dockers_repository_for_containerd_io(tmp_path):
    sb = GuestSandbox(tmp_path, "rhel")
    assert sb.run(_phase(phases_for(config("rhel")), "container-runtime")).returncode == 0
    assert (sb.root / "etc/yum.repos.d/docker-ce.repo").exists()
    assert any(c.startswith("dnf install") and "containerd.io" in c for c in sb.mutating())


def test_containerd_on_ubuntu_needs_no_docker_repository(tmp_path):
    sb = GuestSandbox(tmp_path, "ubuntu")
    assert sb.run(_phase(phases_for(config("ubuntu")), "container-runtime")).returncode == 0
    assert not (sb.root / "etc/apt/sources.list.d/docker.list").exists()


# --- readiness gate --------------------------------------------------------------------------

def gate_phase(stdin: bool = False, smoke: bool = True, expected: int = 4, resource: str = "nvidia.com/gpu"):
    from render.guest_scripts import readiness_phase
    return readiness_phase({"gpu-dev-0": {resource: expected}}, resource, "kubectl -n nvidia-device-plugin logs ds/nvidia-device-plugin --tail=50",
                           ("gpu-stack-smoke", "gpu-smoke-test") if smoke else None, kubeconfig_on_stdin=stdin)


def gate_sandbox(tmp_path, ready="True", allocatable="4", job=("Complete",), admin=True) -> GuestSandbox:
    sb = GuestSandbox(tmp_path, "ubuntu", cluster={
        "nodes": {"gpu-dev-0": {"ready": ready, "allocatable": {"nvidia.com/gpu": allocatable} if allocatable is not None else {}}},
        "jobs": {"gpu-stack-smoke/gpu-smoke-test": list(job)} if job is not None else {}})
    if admin:
        (sb.root / "etc/kubernetes").mkdir(parents=True)
        (sb.root / "etc/kubernetes/admin.conf").write_text("apiVersion: v1\nkind: Config\n")
    return sb


def run_gate(sb, phase, stdin: str = "", timeout: str = "1"):
    return sb.run(phase, stdin=stdin, params={**phase.params, "GS_GATE_TIMEOUT": timeout, "GS_GATE_INTERVAL": "0.2"})


def test_gate_reports_a_converged_cluster_and_changes_nothing(tmp_path):
    from render.readiness import parse_readiness_output
    sb = gate_sandbox(tmp_path)
    result = run_gate(sb, gate_phase())
    assert result.returncode == 0, result.stderr
    assert parse_readiness_output(result.stdout) == {
        "nodes": {"gpu-dev-0": {"ready": True, "allocatable": {"nvidia.com/gpu": 4}, "expected": {"nvidia.com/gpu": 4}}},
        "smokeTest": {"job": "gpu-stack-smoke/gpu-smoke-test", "status": "Succeeded"}}
    assert sb.mutating() == [], "the gate only reads"


@pytest.mark.parametrize("state, step, words", [
    ({"ready": "False"}, "Seed 003 step 1", "node gpu-dev-0 is not Ready"),
    ({"allocatable": None}, "Seed 003 step 4", "kubectl -n nvidia-device-plugin logs ds/nvidia-device-plugin"),
    ({"allocatable": "0"}, "Seed 003 step 4", "has no allocatable nvidia.com/gpu (expected 4)"),
    ({"allocatable": "3"}, "Seed 003 step 2", "has 3 allocatable nvidia.com/gpu, the config expects 4"),
    ({"job": ("Failed",)}, "Seed 003 step 3", "smoke-test Job gpu-stack-smoke/gpu-smoke-test failed"),
    ({"job": ()}, "Seed 003 step 3", "did not finish in 1s"),
])
def test_gate_failures_name_the_seed003_step(tmp_path, state, step, words):
    result = run_gate(gate_sandbox(tmp_path, **state), gate_phase())
    assert result.returncode != 0
    assert step in result.stderr and words in result.stderr, result.stderr


def test_gate_waits_are_bounded(tmp_path):
    import time
    start = time.monotonic()
    result = run_gate(gate_sandbox(tmp_path, ready="False"), gate_phase(), timeout="2")
    assert result.returncode != 0 and "gave up waiting for node gpu-dev-0 Ready after 2s" in result.stdout
    assert time.monotonic() - start < 30


def test_gate_without_smoke_test_and_time_sliced_counts(tmp_path):
    sb = gate_sandbox(tmp_path, allocatable="16", job=None)
    result = run_gate(sb, gate_phase(smoke=False, expected=16))
    assert result.returncode == 0, result.stderr
    assert "node gpu-dev-0 Ready nvidia.com/gpu=16/16" in result.stdout and "job " not in result.stdout


def test_gate_on_a_joined_node_reads_the_kubeconfig_from_stdin(tmp_path):
    sb = gate_sandbox(tmp_path, admin=False)
    assert "no /etc/kubernetes/admin.conf" in run_gate(sb, gate_phase()).stderr
    phase = gate_phase(stdin=True)
    assert phase.stdin_secret == "kubeconfig"
    assert "no kubeconfig arrived on stdin" in run_gate(sb, phase).stderr
    result = run_gate(sb, phase, stdin="apiVersion: v1\nkind: Config\n")
    assert result.returncode == 0, result.stderr
    assert "apiVersion" not in result.stdout + result.stderr


@pytest.mark.parametrize("stdin", [False, True], ids=["admin-kubeconfig", "kubeconfig-on-stdin"])
def test_rendered_readiness_gate_is_shellcheck_clean(tmp_path, stdin):
    phase = gate_phase(stdin=stdin)
    script = tmp_path / "readiness.sh"
    script.write_text(render_script(phase.name, phase.params))
    _shellcheck([script])


# --- NVIDIA's package repositories (issue 22 item 6) -----------------------------------------
# A stock image has no source for nvidia-container-toolkit (any distribution) nor for the EL
# driver / Fabric Manager and Ubuntu's nvlsm (NVIDIA's CUDA repository); the stubs refuse a
# vendor package until its repository is configured (tests/support/guest_stubs.py VENDOR_PACKAGES).

from tests.conftest import require_reference  # noqa: E402

NCT_VENDOR = "https://nvidia.github.io/libnvidia-container"
NCT_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
CUDA_VENDOR = "https://developer.download.nvidia.com/compute/cuda/repos"


def vendor_toolkit_source(family: str, base: str) -> str:
    """The file NVIDIA's install guide (container-toolkit v1.20.0) leaves on the guest, with `base` for its URL:
    apt: the vendor's .list through `sed 's#deb https://#deb [signed-by=<keyring>] https://#g'`; dnf: the .repo as is."""
    if family == "ubuntu":
        text = require_reference("libnvidia-container-ghpages-52a8c195.stable-deb.nvidia-container-toolkit.list").read_text()
        text = text.replace("deb https://", f"deb [signed-by={NCT_KEYRING}] https://")
    else:
        text = require_reference("libnvidia-container-ghpages-7afe8cd4.stable-rpm.nvidia-container-toolkit.repo").read_text()
    assert NCT_VENDOR in text
    return text.replace(NCT_VENDOR, base)


def _installs(sb: GuestSandbox) -> list[str]:
    return [c for c in sb.mutating() if c.startswith(("apt-get install", "dnf install"))]


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
@pytest.mark.parametrize("mirror", [None, "https://mirror.lab.local/nvidia/libnvidia-container"])
def test_stock_image_gets_nvidias_toolkit_repository_before_the_toolkit(tmp_path, family, mirror):
    raw = config(family, **({"repositories": {"nvidiaContainerToolkit": mirror}} if mirror else {}))
    base = mirror or NCT_VENDOR
    sb = GuestSandbox(tmp_path, family)
    phase = _phase(phases_for(raw), "container-runtime")
    result = sb.run(phase)
    assert result.returncode == 0, result.stderr
    assert sb.state["packages"]["nvidia-container-toolkit"].startswith("1.20.0")
    if family == "ubuntu":
        written = (sb.root / "etc/apt/sources.list.d/nvidia-container-toolkit.list").read_text()
        calls = sb.mutating()
        key = calls.index(f"gpg --dearmor -o {sb.root}{NCT_KEYRING}")
        toolkit = next(i for i, c in enumerate(calls) if c.startswith("apt-get install") and "nvidia-container-toolkit" in c)
        update = max(i for i, c in enumerate(calls[:toolkit]) if c == "apt-get update -qq")
        assert key < update < toolkit, "key and source before the `apt-get update` the install reads"
        assert f"{base}/gpgkey" in [c["argv"][-1] for c in sb.calls() if c["cmd"] == "curl"]
    else:
        written = (sb.root / "etc/yum.repos.d/nvidia-container-toolkit.repo").read_text()
    assert written == vendor_toolkit_source(family, base)
    if mirror:
        assert not any(NCT_VENDOR in f["url"] for f in sb.state.get("fetches", []))
    sb.clear_calls()
    tree = sb.tree()
    assert sb.run(phase).returncode == 0
    assert sb.mutating() == [] and sb.tree() == tree


@pytest.mark.parametrize("mirror", [None, "https://mirror.lab.local/cuda/repos"])
def test_el9_driver_gets_the_cuda_repository_before_the_driver(tmp_path, mirror):
    raw = config("rhel", **({"repositories": {"cuda": mirror}} if mirror else {}))
    url = f"{mirror or CUDA_VENDOR}/rhel9/x86_64"
    sb = GuestSandbox(tmp_path, "rhel", dnf_module_streams=["580-open", "580-dkms"])
    phase = _phase(phases_for(raw), "driver")
    result = sb.run(phase)
    assert result.returncode == 0, result.stderr
    # the file `dnf config-manager --add-repo <url>/cuda-rhel9.repo` stores (CUDA Installation Guide), with the mirror's URL
    assert (sb.root / "etc/yum.repos.d/cuda-rhel9.repo").read_text() == (
        f"[cuda-rhel9-x86_64]\nname=cuda-rhel9-x86_64\nbaseurl={url}\nenabled=1\ngpgcheck=1\ngpgkey={url}/D42D0685.pub\n")
    assert "dnf -y -q module enable nvidia-driver:580-open" in sb.mutating()
    assert sb.state["driver_loaded"] == "580.173.02"


def _b200(family: str) -> dict:
    raw = config(family)
    raw["vms"][0]["gpus"] = [{"address": "0000:3b:00.0", "model": "B200-SXM-180GB", "numaNode": 0}]
    raw["vms"][0]["nvswitches"] = [{"address": "0000:05:00.0", "model": "NVSwitch-Gen4", "numaNode": 0, "barMib": 32}]
    return raw


def test_ubuntu_nvlink5_gets_the_cuda_repository_for_nvlsm_only(tmp_path):
    sb = GuestSandbox(tmp_path, "ubuntu", lspci_nvswitches=1)
    result = sb.run(_phase(phases_for(_b200("ubuntu")), "driver"))
    assert result.returncode == 0, result.stderr
    assert f"{CUDA_VENDOR}/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb" in [f["url"] for f in sb.state["fetches"]]
    assert (sb.root / "etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list").read_text() == (
        f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {CUDA_VENDOR}/ubuntu2404/x86_64/ /\n")
    assert sb.state["packages"].get("nvlsm")
    # an H100 guest on Ubuntu takes everything from Ubuntu's archive: no CUDA repository
    plain = GuestSandbox(tmp_path / "h100", "ubuntu")
    assert plain.run(_phase(phases_for(config()), "driver")).returncode == 0
    assert not (plain.root / "etc/apt/sources.list.d").exists() or not list((plain.root / "etc/apt/sources.list.d").glob("cuda-*"))


def test_ubuntu_cuda_mirror_replaces_the_keyring_packages_source(tmp_path):
    raw = _b200("ubuntu")
    raw["guest"]["repositories"] = {"cuda": "http://mirror.lab.local/cuda"}
    sb = GuestSandbox(tmp_path, "ubuntu", lspci_nvswitches=1)
    assert sb.run(_phase(phases_for(raw), "driver")).returncode == 0
    assert (sb.root / "etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list").read_text() == (
        "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] http://mirror.lab.local/cuda/ubuntu2404/x86_64/ /\n")
    assert not any(CUDA_VENDOR in f["url"] for f in sb.state["fetches"]), "the key package comes from the mirror too"


@pytest.mark.parametrize("family, guest, unreachable, words", [
    ("ubuntu", {}, NCT_VENDOR, ["NVIDIA Container Toolkit repository does not answer",
                                f"{NCT_VENDOR}/stable/deb/amd64/InRelease", "gpu-stack:guest.repositories.nvidiaContainerToolkit"]),
    ("rhel", {}, NCT_VENDOR, [f"{NCT_VENDOR}/stable/rpm/x86_64/repodata/repomd.xml", "gpu-stack:guest.repositories.nvidiaContainerToolkit"]),
    ("rhel", {"repositories": {"cuda": "https://mirror.lab.local/cuda"}}, "https://mirror.lab.local/cuda",
     ["NVIDIA CUDA repository", "https://mirror.lab.local/cuda/rhel9/x86_64/repodata/repomd.xml", "gpu-stack:guest.repositories.cuda"]),
    ("rhel", {}, "https://download.docker.com", ["Docker repository", "/centos/9/x86_64/stable/repodata/repomd.xml",
                                                 "gpu-stack:guest.containerRuntime.dockerRepository"]),
])
def test_preflight_refuses_an_unreachable_repository_before_any_install(tmp_path, family, guest, unreachable, words):
    raw = config(family, proxy={"http": "http://100.64.0.5:8888", "https": "http://100.64.0.5:8888"}, **guest)
    sb = GuestSandbox(tmp_path, family, unreachable=[unreachable])
    result = sb.run(_phase(phases_for(raw), "preflight"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    assert "through http://100.64.0.5:8888" in lines[0] and "Couldn't connect to server" in lines[0]
    assert sb.mutating() == [], "nothing installed or written"
    assert {f["proxy"] for f in sb.state["fetches"]} == {"http://100.64.0.5:8888"}, "checked through the proxy apt/dnf use"


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
def test_preflight_checks_the_repositories_this_vm_needs(tmp_path, family):
    sb = GuestSandbox(tmp_path, family)
    result = sb.run(_phase(phases_for(config(family)), "preflight"))
    assert result.returncode == 0, result.stderr
    urls = [f["url"] for f in sb.state["fetches"]]
    if family == "ubuntu":  # containerd from Ubuntu, the driver from Ubuntu's archive: only the toolkit's
        assert urls == [f"{NCT_VENDOR}/stable/deb/amd64/InRelease"]
    else:
        assert urls == [f"{NCT_VENDOR}/stable/rpm/x86_64/repodata/repomd.xml", f"{CUDA_VENDOR}/rhel9/x86_64/repodata/repomd.xml",
                        "https://download.docker.com/linux/centos/9/x86_64/stable/repodata/repomd.xml"]
    assert sb.mutating() == []


def test_preflight_accepts_a_repository_with_release_but_no_inrelease(tmp_path):
    # apt reads Release + Release.gpg where a repository has no InRelease
    sb = GuestSandbox(tmp_path, "ubuntu", missing=[f"{NCT_VENDOR}/stable/deb/amd64/InRelease"])
    result = sb.run(_phase(phases_for(config()), "preflight"))
    assert result.returncode == 0, result.stderr
    assert [f["url"] for f in sb.state["fetches"]] == [f"{NCT_VENDOR}/stable/deb/amd64/InRelease", f"{NCT_VENDOR}/stable/deb/amd64/Release"]
