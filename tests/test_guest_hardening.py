"""Guest behaviour the validators cannot see: atomic writes, the package lock at first boot,
the taint each Kubernetes version applies, short-lived join tokens (issue 11).

Each scenario runs the rendered phase scripts in the sandbox (tests/support/guest_sandbox.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from render.guest_scripts import SCRIPTS
from tests.conftest import require_tool
from tests.support.guest_sandbox import GuestSandbox
from tests.test_guest_scripts import config, phases_for

TOKEN = "abcdef.0123456789abcdef"


def _phase(phases, name):
    return next(p for p in phases if p.name == name)


# --- write_file is atomic ---------------------------------------------------------

def _lib_script(body: str) -> str:
    return "set -euo pipefail\nGS_PHASE=test\n" + (SCRIPTS / "lib.sh").read_text() + "\n" + body + "\n"


def test_write_file_never_exposes_a_partial_or_readable_file(tmp_path):
    root = tmp_path / "root"
    target = root / "etc/containerd/certs.d/nvcr.io/hosts.toml"
    target.parent.mkdir(parents=True)
    target.write_text("old = true\n")
    target.chmod(0o600)
    fifo = tmp_path / "content"
    os.mkfifo(fifo)
    script = _lib_script(f'write_file /etc/containerd/certs.d/nvcr.io/hosts.toml 0600 < "{fifo}"')
    proc = subprocess.Popen(["bash", "-c", script], env={"GS_ROOT": str(root), "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "w") as writer:
        writer.write('[host."https://harbor"]\n  header = { Authorization = ["Basic c2VjcmV0"] }\n')
        writer.flush()
        deadline = time.monotonic() + 10
        temps: list[Path] = []
        while time.monotonic() < deadline:
            temps = [p for p in target.parent.iterdir() if p.name.startswith(".gpu-stack.") and p.stat().st_size > 0]
            if temps:
                break
            time.sleep(0.02)
        assert temps, "the content goes to a temporary file in the same directory first"
        assert temps[0].stat().st_mode & 0o077 == 0, "while it is written, nobody but root can read it"
        assert target.read_text() == "old = true\n", "the final path is untouched until the rename"
        proc.send_signal(signal.SIGKILL)  # interrupted mid-write
        proc.wait(timeout=10)
    assert target.read_text() == "old = true\n", "an interrupted write leaves the old file, never a truncated one"


def test_write_file_renames_into_place_with_the_final_mode(tmp_path):
    root = tmp_path / "root"
    script = _lib_script("printf 'a = 1\\n' | write_file /etc/containerd/config.toml 0644\n"
                         "printf 's\\n' | write_file /etc/secret.toml 0600\n"
                         "printf 'a = 1\\n' | write_file /etc/containerd/config.toml 0644 || echo unchanged")
    result = subprocess.run(["bash", "-c", script], env={"GS_ROOT": str(root), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/containerd/config.toml").read_text() == "a = 1\n"
    assert oct((root / "etc/containerd/config.toml").stat().st_mode & 0o777) == "0o644"
    assert oct((root / "etc/secret.toml").stat().st_mode & 0o777) == "0o600"
    assert result.stdout.rstrip().endswith("unchanged"), "same content: nothing written"
    leftovers = [p for p in root.rglob(".gpu-stack.*")]
    assert leftovers == []


# --- the package lock at first boot -----------------------------------------------

UBUNTU_TIMERS = {"apt-daily.timer": {"enabled": True, "active": True},
                 "apt-daily-upgrade.timer": {"enabled": True, "active": True}}


def test_simulated_lock_fails_apt_get_without_a_timeout(tmp_path):
    """The stub behaves like apt: a held dpkg lock fails a call that does not wait."""
    sb = GuestSandbox(tmp_path, "ubuntu", dpkg_lock_held=True)
    env = {"PATH": f"{sb.bin}:/usr/bin:/bin", "GS_ROOT": str(sb.root), "GS_SANDBOX": str(sb.tmp)}
    plain = subprocess.run([str(sb.bin / "apt-get"), "install", "-y", "jq"], env=env, capture_output=True, text=True)
    assert plain.returncode == 100 and "Could not get lock /var/lib/dpkg/lock-frontend" in plain.stderr
    waiting = subprocess.run([str(sb.bin / "apt-get"), "-o", "DPkg::Lock::Timeout=60", "install", "-y", "jq"],
                             env=env, capture_output=True, text=True)
    assert waiting.returncode == 0


def test_first_boot_apt_daily_and_unattended_upgrades_do_not_fail_the_driver_install(tmp_path):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu", units=dict(UBUNTU_TIMERS), dpkg_lock_held=True, lists_lock_held=True,
                      busy_units={"apt-daily.service": 3})
    phases = phases_for(config())
    for name in ("driver", "container-runtime"):
        result = sb.run(_phase(phases, name))
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
    calls = sb.mutating()
    assert "systemctl stop apt-daily.timer" in calls and "systemctl stop apt-daily-upgrade.timer" in calls
    assert calls.index("systemctl stop apt-daily.timer") < next(i for i, c in enumerate(calls) if c.startswith("apt-get"))
    assert sb.state["waited_for_lock"], "apt-get waited for the dpkg lock instead of failing"
    assert all(c.split()[1] in ("update", "install") for c in calls if c.startswith("apt-get"))
    assert sb.state["units"]["apt-daily.timer"]["active"] is False, "held off during bootstrap"
    sb.clear_calls()
    verify = sb.run(_phase(phases, "verify"))
    assert verify.returncode == 0, verify.stderr
    assert {"systemctl start apt-daily.timer", "systemctl start apt-daily-upgrade.timer"} <= set(sb.mutating())
    assert sb.state["units"]["apt-daily-upgrade.timer"]["active"] is True, "security updates resume after bootstrap"
    sb.clear_calls()
    assert sb.run(_phase(phases, "verify")).returncode == 0
    assert sb.mutating() == [], "resumed once; a second verify changes nothing"


def test_rhel_holds_off_dnf_makecache(tmp_path):
    sb = GuestSandbox(tmp_path, "rhel", units={"firewalld": {"enabled": True, "active": True},
                                             "dnf-makecache.timer": {"enabled": True, "active": True}})
    result = sb.run(_phase(phases_for(config("rhel")), "driver"))
    assert result.returncode == 0, result.stderr
    calls = sb.mutating()
    assert calls.index("systemctl stop dnf-makecache.timer") < next(i for i, c in enumerate(calls) if c.startswith("dnf install"))


# --- the taint each Kubernetes version applies -----------------------------------------

@pytest.mark.parametrize("version, removed", [
    ("1.23.17", ["node-role.kubernetes.io/master"]),
    ("1.24.17", ["node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane"]),
    ("1.25.16", ["node-role.kubernetes.io/control-plane"]),
    ("1.32.4", ["node-role.kubernetes.io/control-plane"]),
])
def test_single_node_init_removes_the_taints_kubeadm_applied(tmp_path, version, removed):
    require_tool("openssl")
    raw = config()
    raw["kubernetes"]["version"] = version
    if version < "1.24":  # pkgs.k8s.io starts at v1.24: a mirror is required (stacks/checks.py)
        raw["kubernetes"]["packageRepository"] = "https://mirror.lab.local/kubernetes/core:/stable:/v1.23"
    if version < "1.28":  # a device plugin release that supports this Kubernetes (stacks/compat.py)
        raw["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0" if version < "1.25" else "0.14.5", "deploy": "static"}
    phase = _phase(phases_for(raw), "kubernetes")
    sb = GuestSandbox(tmp_path, "ubuntu")
    result = sb.run(phase)
    assert result.returncode == 0, result.stderr
    calls = sb.mutating()
    assert [c for c in calls if c.startswith("kubectl taint")] == [f"kubectl taint node gpu-dev-0 {k}:NoSchedule-" for k in removed]
    assert not [t for t in sb.state["node"]["taints"] if t.startswith("node-role.kubernetes.io/")], "GPU pods can schedule"
    sb.clear_calls()
    assert sb.run(phase).returncode == 0 and sb.mutating() == []


# --- short-lived join tokens -------------------------------------------------------------

def test_control_plane_creates_a_short_lived_token_per_join_and_a_joined_node_never_needs_it_again(tmp_path):
    from render.guest_scripts import join_token_phase
    from render.identity import split_join_token_output
    from stacks.load import parse_stack_config
    from tests.test_guest_scripts import SECRETS

    require_tool("openssl")
    raw = config()
    cfg, _ = parse_stack_config(raw, SECRETS)
    control = GuestSandbox(tmp_path / "cp", "ubuntu")
    init = control.run(_phase(phases_for(raw), "kubernetes"))
    assert init.returncode == 0, init.stderr
    assert control.state["token_ttls"] == {control.state["tokens"][0]: "1h0m0s"}, "kubeadm init's own token expires too"

    phase = join_token_phase(cfg.vms[0].model_copy(update={"name": "gpu-dev-1"}), cfg.kubernetes)
    created = control.run(phase)
    assert created.returncode == 0, created.stderr
    token = split_join_token_output(created.stdout)
    assert token and token in control.state["tokens"]
    assert control.state["token_ttls"][token] == "2h", "kubernetes.joinTokenTtl, never 0"
    create = next(c for c in control.mutating() if c.startswith("kubeadm token create"))
    assert "--description gpu-stack: kubeadm join of gpu-dev-1" in create

    raw_join = config()
    raw_join["kubernetes"] = {"version": "1.32.4", "mode": "join",
                              "join": {"controlPlaneEndpoint": "10.0.0.10:6443", "caCertHash": "sha256:" + "a" * 64}}
    join = _phase(phases_for(raw_join, role="join"), "kubernetes")
    node = GuestSandbox(tmp_path / "node", "ubuntu")
    first = node.run(join, stdin=token + "\n")
    assert first.returncode == 0, first.stderr
    assert any(c.startswith(f"kubeadm join 10.0.0.10:6443 --token {token} ") for c in node.mutating())
    node.clear_calls()
    expired = "zzzzzz.zzzzzzzzzzzzzzzz"  # what the state still holds hours later
    again = node.run(join, stdin=expired + "\n")
    assert again.returncode == 0 and node.mutating() == [], "a joined node never uses a token again"
    assert token not in first.stdout + first.stderr + created.stderr


def test_join_token_phase_refuses_a_vm_without_a_control_plane(tmp_path):
    from render.guest_scripts import join_token_phase
    from stacks.load import parse_stack_config
    from tests.test_guest_scripts import SECRETS

    cfg, _ = parse_stack_config(config(), SECRETS)
    result = GuestSandbox(tmp_path, "ubuntu").run(join_token_phase(cfg.vms[0], cfg.kubernetes))
    assert result.returncode != 0 and "kubeadm init has not run" in result.stderr


# --- kernel modules: open or proprietary, precompiled or DKMS ----------------------------

def _driver_calls(tmp_path, raw, **state):
    sb = GuestSandbox(tmp_path, "ubuntu", **state)
    result = sb.run(_phase(phases_for(raw), "driver"))
    return sb, result


def test_ubuntu_prefers_the_signed_precompiled_open_modules_for_the_running_kernel(tmp_path):
    raw = config()  # dev: an L40S (Ada): open by default
    kernel = "6.8.0-45-generic"
    sb, result = _driver_calls(tmp_path, raw, kernel=kernel, precompiled_driver="570.172.08",
                               archive=[f"linux-modules-nvidia-570-server-open-{kernel}"])
    assert result.returncode == 0, result.stderr
    install = next(c for c in sb.mutating() if c.startswith("apt-get install"))
    assert f"linux-modules-nvidia-570-server-open-{kernel}" in install
    assert "linux-modules-nvidia-570-server-open-generic" in install, "the flavour metapackage follows kernel updates"
    assert "nvidia-headless-no-dkms-570-server-open" in install and "dkms" not in install.replace("no-dkms", "")
    assert sb.state["module_flavour"] == "open" and sb.state["driver_loaded"] == "570.172.08"
    assert "kernel modules: open, precompiled" in result.stdout


def test_ubuntu_falls_back_to_dkms_where_no_precompiled_package_exists(tmp_path):
    sb, result = _driver_calls(tmp_path, config(), kernel="6.8.0-999-generic", archive=[])
    assert result.returncode == 0, result.stderr
    install = next(c for c in sb.mutating() if c.startswith("apt-get install"))
    assert "nvidia-headless-570-server-open" in install and "linux-modules-nvidia" not in install
    assert "kernel modules: open, dkms" in result.stdout


def test_pascal_gets_the_proprietary_modules(tmp_path):
    raw = config()
    raw["vms"][0]["gpus"] = [{"address": "0000:3b:00.0", "model": "P100-PCIE-16GB", "numaNode": 0}]
    kernel = "6.8.0-45-generic"
    sb, result = _driver_calls(tmp_path, raw, kernel=kernel, precompiled_driver="570.172.08",
                               archive=[f"linux-modules-nvidia-570-server-{kernel}", f"linux-modules-nvidia-570-server-open-{kernel}"])
    assert result.returncode == 0, result.stderr
    install = next(c for c in sb.mutating() if c.startswith("apt-get install"))
    assert f"linux-modules-nvidia-570-server-{kernel}" in install and "-open" not in install
    assert sb.state["module_flavour"] == "proprietary"


def test_precompiled_modules_of_another_driver_build_fail_with_the_fix(tmp_path):
    kernel = "6.8.0-45-generic"
    _, result = _driver_calls(tmp_path, config(), kernel=kernel, precompiled_driver="570.133.20",
                              archive=[f"linux-modules-nvidia-570-server-open-{kernel}"])
    assert result.returncode != 0
    assert "are driver '570.133.20', not 570.172.08; pin guest.nvidia.driverVersion" in result.stderr


def test_runfile_picks_the_module_flavour(tmp_path):
    raw = config("rhel", nvidia={"driverVersion": "570.172.08", "installMethod": "runfile",
                                 "runfileUrl": "https://mirror.lab/NVIDIA-Linux-x86_64-570.172.08.run"})
    sb = GuestSandbox(tmp_path, "rhel")
    assert sb.run(_phase(phases_for(raw), "driver")).returncode == 0
    installer = next(c for c in sb.mutating() if c.startswith("sh ") and "NVIDIA-Linux" in c)
    assert "-m=kernel-open" in installer


def test_rhel_package_flavour(tmp_path):
    sb = GuestSandbox(tmp_path, "rhel")
    assert sb.run(_phase(phases_for(config("rhel")), "driver")).returncode == 0
    assert any("kmod-nvidia-open-dkms-570.172.08" in c for c in sb.mutating() if c.startswith("dnf install"))


def _gpu(model: str) -> dict:
    """One GPU of this model; Blackwell parts carry no catalog BAR1 size, so it is given (render/catalog.py)."""
    gpu = {"address": "0000:3b:00.0", "model": model, "numaNode": 0}
    if model.startswith("B200"):
        gpu["bar1Gib"] = 256
    return gpu


@pytest.mark.parametrize("model, flavour, message", [
    ("P100-PCIE-16GB", "open", "open kernel modules cannot drive vms[0].gpus[0] (P100-PCIE-16GB, Pascal)"),
    ("V100-PCIE-16GB", "open", "open kernel modules cannot drive vms[0].gpus[0] (V100-PCIE-16GB, Volta)"),
    ("B200-SXM-180GB", "proprietary", "vms[0].gpus[0] (B200-SXM-180GB, Blackwell) runs only with the open kernel modules"),
])
def test_kernel_modules_that_cannot_drive_the_gpu_are_refused_naming_the_key(model, flavour, message):
    from stacks.errors import ConfigError
    from stacks.load import parse_stack_config
    from tests.test_guest_scripts import SECRETS
    raw = config(nvidia={"driverVersion": "570.172.08", "kernelModules": flavour})
    raw["vms"][0]["gpus"] = [_gpu(model)]
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, SECRETS)
    assert "gpu-stack:guest.nvidia.kernelModules" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("model, expected", [("P100-PCIE-16GB", "proprietary"), ("V100-SXM2-32GB", "proprietary"),
                                             ("T4", "open"), ("H100-SXM5-80GB", "open"), ("B200-SXM-180GB", "open")])
def test_kernel_modules_default_from_the_architecture(model, expected):
    raw = config()
    raw["vms"][0]["gpus"] = [_gpu(model)]
    driver = _phase(phases_for(raw), "driver")
    assert driver.params["GS_KERNEL_MODULES"] == expected


def test_open_modules_need_branch_515(tmp_path):
    from stacks.errors import ConfigError
    from stacks.load import parse_stack_config
    from tests.test_guest_scripts import SECRETS
    with pytest.raises(ConfigError) as err:
        parse_stack_config(config(nvidia={"driverVersion": "510.47.03"}), SECRETS)
    assert "gpu-stack:guest.nvidia.driverVersion" in str(err.value) and "branch 515" in str(err.value)
