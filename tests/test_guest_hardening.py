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

from render.guest_scripts import CLOUD_INIT_TIMEOUT_S, SCRIPTS
from tests.conftest import hgx_board, require_tool
from tests.support.guest_sandbox import GuestSandbox
from tests.test_guest_scripts import config as _stack_config, phases_for


def config(family: str = "ubuntu", **guest_overrides):
    """The dev stack with the driver these hardening cases were written around (570.172.08: branch 570's package
    names, streams and precompiled modules); the stack's own pin is checked in test_guest_scripts.py."""
    raw = _stack_config(family, **guest_overrides)
    raw["guest"]["nvidia"] = {"driverVersion": "570.172.08", **raw["guest"]["nvidia"]} if "nvidia" in guest_overrides else {**raw["guest"]["nvidia"], "driverVersion": "570.172.08"}
    return raw

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


def test_the_stub_systemctl_reports_a_running_oneshot_as_activating_like_systemd(tmp_path):
    """systemctl(1) is-active: prints the state, exit 0 only if one unit is active (systemctl-is-active.c: active,
    reloading, refreshing; else 3, 4 for no such unit). A running Type=oneshot unit is "activating" (systemd.service(5))."""
    sb = GuestSandbox(tmp_path, "ubuntu", units=dict(UBUNTU_TIMERS), activating={"apt-daily.service": 2})
    env = {"PATH": f"{sb.bin}:/usr/bin:/bin", "GS_ROOT": str(sb.root), "GS_SANDBOX": str(sb.tmp)}

    def systemctl(*argv):
        proc = subprocess.run([str(sb.bin / "systemctl"), *argv], env=env, capture_output=True, text=True)
        return proc.returncode, proc.stdout

    assert systemctl("is-active", "apt-daily.service") == (3, "activating\n"), "running, yet not 'active'"
    assert systemctl("show", "-p", "ActiveState", "--value", "apt-daily.service") == (0, "activating\n")
    assert systemctl("show", "-p", "ActiveState", "--value", "apt-daily.service") == (0, "inactive\n"), "its command exited"
    assert systemctl("is-active", "--quiet", "apt-daily.timer") == (0, "")
    assert systemctl("is-active", "no-such.service") == (4, "inactive\n")


def test_apt_daily_while_activating_is_waited_for(tmp_path):
    """apt-daily.service is Type=oneshot: while its `apt-get update` runs it is "activating", which
    `systemctl is-active --quiet` calls not active. The phase waits on its ActiveState until it settles."""
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu", units=dict(UBUNTU_TIMERS), lists_lock_held=True,
                      activating={"apt-daily.service": 4})
    result = sb.run(_phase(phases_for(config()), "driver"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for apt-daily.service to finish (activating)" in result.stdout
    calls = [" ".join([c["cmd"], *c["argv"]]) for c in sb.calls()]
    queries = [i for i, c in enumerate(calls) if c == "systemctl show -p ActiveState --value apt-daily.service"]
    update = next(i for i, c in enumerate(calls) if c.startswith("apt-get") and " update" in c)
    assert len(queries) >= 5 and queries[-1] < update, "polled until it settled, before apt-get update"
    assert sb.state["activating"]["apt-daily.service"] == 0


def test_first_boot_apt_daily_and_unattended_upgrades_do_not_fail_the_driver_install(tmp_path):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu", units=dict(UBUNTU_TIMERS), dpkg_lock_held=True, lists_lock_held=True,
                      activating={"apt-daily.service": 3})
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
    if version < "1.28":  # a device plugin release that supports this Kubernetes (config/compat.py)
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


@pytest.mark.parametrize("version, gpu, flag", [
    ("570.172.08", None, "--kernel-module-type=open"),  # -M from 555 on; -m is "deprecated; use --kernel-module-type"
    ("580.95.05", "P100-PCIE-16GB", "--kernel-module-type=proprietary"),
    ("550.144.03", None, "-m=kernel-open"),  # no --kernel-module-type before 555 (nvidia-installer option_table.h)
    ("535.261.03", "P100-PCIE-16GB", "-m=kernel"),
])
def test_runfile_picks_the_module_flavour_with_the_option_its_installer_has(tmp_path, version, gpu, flag):
    raw = config("rhel", nvidia={"driverVersion": version, "installMethod": "runfile",
                                 "runfileUrl": f"https://mirror.lab/NVIDIA-Linux-x86_64-{version}.run"})
    if gpu:
        raw["vms"][0]["gpus"] = [{"address": "0000:3b:00.0", "model": gpu, "numaNode": 0}]
    sb = GuestSandbox(tmp_path, "rhel")
    result = sb.run(_phase(phases_for(raw), "driver"))
    assert result.returncode == 0, result.stderr
    installer = next(c for c in sb.mutating() if c.startswith("sh ") and "NVIDIA-Linux" in c).split()
    assert flag in installer
    assert not any(a.startswith(("-m=", "--kernel-module-type=")) for a in installer if a != flag), "exactly one flavour option"


def test_rhel_package_flavour(tmp_path):
    sb = GuestSandbox(tmp_path, "rhel")
    assert sb.run(_phase(phases_for(config("rhel")), "driver")).returncode == 0
    assert any("kmod-nvidia-open-dkms-570.172.08" in c for c in sb.mutating() if c.startswith("dnf install"))


def _gpu(model: str) -> dict:
    """One GPU of this model; Blackwell parts carry no catalog BAR1 size, so it is given (config/catalog.py)."""
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
    from config.errors import ConfigError
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
    from config.errors import ConfigError
    from stacks.load import parse_stack_config
    from tests.test_guest_scripts import SECRETS
    with pytest.raises(ConfigError) as err:
        parse_stack_config(config(nvidia={"driverVersion": "510.47.03"}), SECRETS)
    assert "gpu-stack:guest.nvidia.driverVersion" in str(err.value) and "branch 515" in str(err.value)


# --- what SOURCES.md verified against the vendors (issue 11, 2026-12-02) -----------------------

NVIDIA_STREAMS = ["latest-dkms", "open-dkms", "535-dkms", "535-open", "570-dkms", "570-open", "580-dkms", "580-open"]
"""Streams of module nvidia-driver in NVIDIA's CUDA repository for EL9 (NVIDIA/yum-packaging-dkms-nvidia README)."""


def _packages(install: str) -> list[str]:
    """The package arguments of a recorded `dnf install -y -q ...`."""
    return [a for a in install.split()[2:] if not a.startswith("-")]


def _el_driver(tmp_path, version: str, gpu: str | None = None, **state):
    raw = config("rhel", nvidia={"driverVersion": version})
    if gpu:
        raw["vms"][0]["gpus"] = [{"address": "0000:3b:00.0", "model": gpu, "numaNode": 0}]
    sb = GuestSandbox(tmp_path, "rhel", dnf_module_streams=NVIDIA_STREAMS, **state)
    return sb, sb.run(_phase(phases_for(raw), "driver"))


@pytest.mark.parametrize("gpu, stream, kmod", [
    (None, "570-open", "kmod-nvidia-open-dkms"),  # L40S (Ada): open
    ("P100-PCIE-16GB", "570-dkms", "kmod-nvidia-latest-dkms"),  # Pascal: proprietary
])
def test_el9_enables_the_branch_stream_of_the_flavour_and_installs_compute_only(tmp_path, gpu, stream, kmod):
    sb, result = _el_driver(tmp_path, "570.172.08", gpu)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = sb.mutating()
    enable = calls.index(f"dnf -y -q module enable nvidia-driver:{stream}")
    install = next(i for i, c in enumerate(calls) if c.startswith("dnf install"))
    assert enable < install, "the stream is enabled before its packages are asked for"
    assert _packages(calls[install]) == ["nvidia-driver-cuda-570.172.08", f"{kmod}-570.172.08"], \
        "compute-only from 560: nvidia-driver-cuda brings nvidia-kmod-common and nvidia-persistenced"
    assert set(sb.state["versionlock"]) >= {"nvidia-driver-cuda", kmod, "nvidia-driver-cuda-libs", "nvidia-kmod-common", "nvidia-persistenced"}, \
        "what nvidia-driver-cuda requires at its version is locked with it (the stream keeps the branch, not the patch)"
    assert sb.state["driver_loaded"] == "570.172.08"
    sb.clear_calls()
    assert sb.run(_phase(phases_for(config("rhel") if gpu is None else _with_gpu(config("rhel"), gpu)), "driver")).returncode == 0
    assert not [c for c in sb.mutating() if "module" in c], "an enabled stream is left alone"


def _with_gpu(raw: dict, gpu: str) -> dict:
    raw["vms"][0]["gpus"] = [{"address": "0000:3b:00.0", "model": gpu, "numaNode": 0}]
    return raw


def test_el9_without_the_stream_would_find_no_driver_package(tmp_path):
    """The stub filters like dnf: a module's packages are hidden until one of its streams is enabled."""
    sb = GuestSandbox(tmp_path, "rhel", dnf_module_streams=NVIDIA_STREAMS)
    env = {"PATH": f"{sb.bin}:/usr/bin:/bin", "GS_ROOT": str(sb.root), "GS_SANDBOX": str(sb.tmp)}
    plain = subprocess.run([str(sb.bin / "dnf"), "install", "-y", "kmod-nvidia-open-dkms-570.172.08"], env=env)
    assert plain.returncode != 0


def test_el9_branch_change_resets_the_old_stream_first(tmp_path):
    sb = GuestSandbox(tmp_path, "rhel", dnf_module_streams=NVIDIA_STREAMS)
    assert sb.run(_phase(phases_for(config("rhel")), "driver")).returncode == 0
    assert "stream=570-open" in (sb.root / "etc/dnf/modules.d/nvidia-driver.module").read_text()
    sb.clear_calls()
    sb.set_state(versionlock=[])  # upgrade-unlock's work (tests/test_upgrades.py)
    result = sb.run(_phase(phases_for(config("rhel", nvidia={"driverVersion": "580.95.05"})), "driver"))
    assert result.returncode == 0, result.stdout + result.stderr
    calls = sb.mutating()
    assert calls.index("dnf -y -q module reset nvidia-driver") < calls.index("dnf -y -q module enable nvidia-driver:580-open")
    assert sb.state["driver_loaded"] == "580.95.05"


def test_el9_before_560_also_installs_nvidia_driver_and_locks_it_beside_a_locked_cuda_package(tmp_path):
    """Before 560 nvidia-driver-cuda does not require nvidia-kmod-common; nvidia-driver does.
    A lock on nvidia-driver-cuda (listed as nvidia-driver-cuda-EPOCH:VERSION) is not one on nvidia-driver."""
    sb, result = _el_driver(tmp_path, "535.261.03", versionlock=["nvidia-driver-cuda"],
                            packages={"openssh-server": "1.0", "nvidia-driver-cuda": "535.261.03"})
    assert result.returncode == 0, result.stdout + result.stderr
    install = next(c for c in sb.mutating() if c.startswith("dnf install"))
    assert _packages(install) == ["nvidia-driver-535.261.03", "nvidia-driver-cuda-535.261.03", "kmod-nvidia-open-dkms-535.261.03"]
    assert "dnf -y -q module enable nvidia-driver:535-open" in sb.mutating()
    assert {"nvidia-driver", "nvidia-driver-cuda", "kmod-nvidia-open-dkms"} <= set(sb.state["versionlock"])


def test_el_upgrade_unlocks_every_package_the_driver_and_runtime_phases_lock():
    from render.guest_scripts import TOOLKIT_PACKAGES, upgrade_phases
    from stacks.load import parse_stack_config
    from tests.test_guest_scripts import SECRETS

    cfg, _ = parse_stack_config(config("rhel"), SECRETS)
    bootstrap = phases_for(config("rhel"))
    phases = {p.name: p for p in upgrade_phases(cfg.vms[0], bootstrap, cfg.fleet, "init", True, "nvidia.com/gpu", 1, "", False)}
    driver = dict(e.split("=", 1) for e in phases["upgrade-driver"].params["GS_UNLOCK"].split())
    assert {"nvidia-driver-cuda", "kmod-nvidia-open-dkms", "kmod-nvidia-latest-dkms", "nvidia-driver"} <= set(driver)
    runtime = dict(e.split("=", 1) for e in phases["upgrade-runtime"].params["GS_UNLOCK"].split())
    assert set(runtime) == set(TOOLKIT_PACKAGES) and set(runtime.values()) == {"1.20.0"}


def test_el_toolkit_pins_and_locks_the_four_packages_nvidia_installs_together(tmp_path):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "rhel")
    result = sb.run(_phase(phases_for(config("rhel")), "container-runtime"))
    assert result.returncode == 0, result.stdout + result.stderr
    install = next(c for c in sb.mutating() if c.startswith("dnf install") and "nvidia-container-toolkit" in c)
    assert _packages(install) == ["nvidia-container-toolkit-1.20.0", "nvidia-container-toolkit-base-1.20.0",
                                   "libnvidia-container-tools-1.20.0", "libnvidia-container1-1.20.0"]
    assert {"nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1"} <= set(sb.state["versionlock"]), "libnvidia-container-tools is only required >= by the toolkit"


def _runc_options(doc: dict, version: int) -> tuple[dict, dict]:
    cri = doc["plugins"]["io.containerd.cri.v1.runtime" if version == 3 else "io.containerd.grpc.v1.cri"]
    runtimes = cri["containerd"]["runtimes"]
    return runtimes["runc"]["options"], runtimes["nvidia"]["options"]


@pytest.mark.parametrize("family, major", [("ubuntu", 1), ("rhel", 2)])
def test_containerd_gets_the_systemd_cgroup_driver_and_certs_d_on_1x_and_2x(tmp_path, family, major):
    """containerd 2.x `config default` (config version 3) has no SystemdCgroup line and writes
    `config_path = ''` (tests/fixtures/containerd): a substitution of the 1.x text does nothing there."""
    import tomllib

    require_tool("openssl")
    sb = GuestSandbox(tmp_path, family, containerd_major=major)
    result = sb.run(_phase(phases_for(config(family)), "container-runtime"))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = tomllib.loads((sb.root / "etc/containerd/config.toml").read_text())
    version = doc.get("version")
    assert version == (3 if major == 2 else 2)
    runc, nvidia = _runc_options(doc, version)
    assert runc["SystemdCgroup"] is True, "kubeadm's kubelet uses the systemd driver; the runtime must match"
    assert nvidia["SystemdCgroup"] is True, "nvidia-ctk copies runc's options into the nvidia runtime"
    images = doc["plugins"]["io.containerd.cri.v1.images" if version == 3 else "io.containerd.grpc.v1.cri"]
    assert images["registry"]["config_path"] == "/etc/containerd/certs.d"


def test_containerd_config_without_a_runc_options_table_is_refused(tmp_path):
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu")
    stub = sb.bin / "containerd"
    stub.write_text("#!/bin/sh\n[ \"$*\" = \"config default\" ] && printf 'version = 3\\n[plugins]\\n'\nexit 0\n")
    result = sb.run(_phase(phases_for(config()), "container-runtime"))
    assert result.returncode != 0 and "no runc options table" in result.stderr
    assert not (sb.root / "etc/containerd/config.toml").exists(), "nothing half-configured is installed"


@pytest.mark.parametrize("rc, message", [
    (0, None),
    (2, "cloud-init finished with recoverable errors (exit 2)"),
    (1, "cloud-init finished with an error (exit 1)"),
])
def test_wait_ssh_reads_cloud_inits_exit_status(tmp_path, rc, message):
    """cloud-init >= 23.4: 0 success, 2 recoverable error, 1 unrecoverable (doc/rtd/explanation/return_codes.rst).
    Each means first boot is over; the non-zero ones are reported with cloud-init's summary."""
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu", cloud_init_rc=rc)
    (sb.root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
    result = sb.run(_phase(phases_for(config()), "wait-ssh"))
    assert result.returncode == 0, result.stderr
    assert "ready, boot" in result.stdout
    if message is None:
        assert "cloud-init finished" not in result.stdout
    else:
        assert message in result.stdout and "  recoverable_errors:" in result.stdout
    assert any(c["cmd"] == "cloud-init" and c["argv"] == ["status", "--wait"] for c in sb.calls())


def test_wait_ssh_waits_for_cloud_init_for_a_stated_time():
    phase = _phase(phases_for(config()), "wait-ssh")
    assert phase.params == {"GS_VM_NAME": "gpu-dev-0", "GS_CLOUD_INIT_TIMEOUT": str(CLOUD_INIT_TIMEOUT_S)}
    assert CLOUD_INIT_TIMEOUT_S == 900


@pytest.mark.parametrize("status", ["running", "not started"])
def test_wait_ssh_gives_up_on_a_cloud_init_that_never_finishes(tmp_path, status):
    """`cloud-init status --wait` polls without limit while the status is "running" or "not started"
    (cloudinit/cmd/status.py handle_status_args, tag 26.2); the stub's never returns. The phase ends
    within its bound with one line naming cloud-init and the VM."""
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu", cloud_init_status=status)
    (sb.root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
    phase = _phase(phases_for(config()), "wait-ssh")
    started = time.monotonic()
    result = sb.run(phase, params={**phase.params, "GS_CLOUD_INIT_TIMEOUT": "2"}, timeout=40)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert errors == [f"[gpu-stack wait-ssh] ERROR: cloud-init on VM gpu-dev-0 has not finished after 2s (cloud-init status: {status}); "
                      "see /var/log/cloud-init.log, or disable cloud-init in an image that does not use it (touch /etc/cloud/cloud-init.disabled)"]
    assert "ready, boot" not in result.stdout


def test_wait_ssh_does_not_wait_for_a_disabled_cloud_init(tmp_path):
    """`status: disabled` (marker file, kernel command line, or no datasource found): nothing will run, so no wait."""
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "ubuntu", cloud_init_status="disabled")
    (sb.root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
    result = sb.run(_phase(phases_for(config()), "wait-ssh"), timeout=40)
    assert result.returncode == 0, result.stderr
    assert "cloud-init is disabled on gpu-dev-0 (cloud-init status: disabled); not waiting for it" in result.stdout
    assert "ready, boot" in result.stdout
    assert [c["argv"] for c in sb.calls() if c["cmd"] == "cloud-init"] == [["status"]]


def test_toolkit_libraries_that_drifted_are_reinstalled_before_they_are_held(tmp_path):
    """A node set up when only the toolkit was held: its libraries moved on; the phase brings all four back, then holds them."""
    require_tool("openssl")
    sb = GuestSandbox(tmp_path, "rhel")
    phase = _phase(phases_for(config("rhel")), "container-runtime")
    assert sb.run(phase).returncode == 0
    state = sb.state
    state["packages"]["libnvidia-container-tools"] = "1.18.0"
    state["versionlock"] = [n for n in state["versionlock"] if not n.startswith("libnvidia-container-tools")] \
        if isinstance(state["versionlock"], list) else {k: v for k, v in state["versionlock"].items() if k != "libnvidia-container-tools"}
    sb.set_state(packages=state["packages"], versionlock=state["versionlock"])
    sb.clear_calls()
    result = sb.run(phase)
    assert result.returncode == 0, result.stdout + result.stderr
    install = next(c for c in sb.mutating() if c.startswith("dnf install") and "libnvidia-container-tools" in c)
    assert "libnvidia-container-tools-1.20.0" in install.split()
    assert sb.state["packages"]["libnvidia-container-tools"] == "1.20.0"
    # converged: a third run installs nothing
    sb.clear_calls()
    assert sb.run(phase).returncode == 0
    assert not [c for c in sb.mutating() if c.startswith("dnf install")]


def test_el9_runfile_driver_still_gets_fabric_manager_from_its_module_stream(tmp_path):
    """Fabric Manager is in the nvidia-driver module's `fm` profile (NVIDIA/yum-packaging-fabric-manager): a runfile
    driver enables no stream, so the NVSwitch step enables the branch's before asking for the packages."""
    require_tool("openssl")
    raw = config("rhel", nvidia={"driverVersion": "570.172.08", "installMethod": "runfile",
                                 "runfileUrl": "https://mirror.lab/NVIDIA-Linux-x86_64-570.172.08.run"})
    raw["vms"][0]["gpus"], raw["vms"][0]["nvswitches"] = hgx_board(switch_model="NVSwitch-Gen3")  # a whole HGX H100 board
    sb = GuestSandbox(tmp_path, "rhel", dnf_module_streams=NVIDIA_STREAMS, lspci_gpus=8, lspci_nvswitches=4)
    result = sb.run(_phase(phases_for(raw), "driver"))
    assert result.returncode == 0, result.stdout + result.stderr
    calls = sb.mutating()
    enable = calls.index("dnf -y -q module enable nvidia-driver:570-open")
    fm = next(i for i, c in enumerate(calls) if c.startswith("dnf install") and "nvidia-fabric-manager" in c)
    assert enable < fm
    assert sb.state["packages"]["nvidia-fabric-manager"] == "570.172.08"
