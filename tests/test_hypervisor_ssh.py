"""The libvirt provider reaches a qemu+ssh hypervisor with the stack's key and the pinned host key.

terraform-provider-libvirt v0.8.1 connects at preview with its own Go SSH client
(hypervisors/libvirt/connection.py has what it reads). These tests take the provider
URI the program registers, and the files the program writes, and hand them to
tests/support/libvirt_ssh_probe: Go's SSH client and known_hosts reader and go-libvirt,
at the versions the provider's go.mod pins, used the way its libvirt/uri/ssh.go uses
them. The probe dials a real OpenSSH sshd on this machine and, through it, the real
libvirtd's socket, as the provider does. A key that is not the pinned one is refused.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from hypervisors.libvirt import connection
from hypervisors.libvirt import backend as libvirt_backend
from tests.conftest import ROOT, missing_validator, require_tool, run_stack, stack_file

PROBE = ROOT / "tests" / "support" / "libvirt_ssh_probe"
LIBVIRT_SOCK = "/var/run/libvirt/libvirt-sock"


def _keypair(directory: Path, name: str) -> tuple[Path, str]:
    key = directory / name
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    return key, " ".join(key.with_suffix(".pub").read_text().split()[:2])


def _registered_uri(raw: dict, secrets: dict, stack: str = "test") -> str:
    result = run_stack(raw, secrets=secrets, stack=stack)
    (state,) = [state for urn, (_, _, state) in result.registered.items() if "pulumi:providers:libvirt::" in urn]
    return state["uri"]


def _one_host_stack(uri: str, host_key: str | None) -> dict:
    raw = stack_file("dev")
    raw["hosts"][0]["libvirtUri"] = uri
    if host_key is None:
        raw["hosts"][0].pop("hostKey", None)
    else:
        raw["hosts"][0]["hostKey"] = host_key
    return raw


# --- the URI and files, as the program gives them --------------------------------------------------


def test_the_provider_gets_a_key_file_a_known_hosts_file_and_no_unchecked_host():
    raw = stack_file("dev")
    uri = _registered_uri(raw, {"sshPrivateKey": "k", "grafanaAdminPassword": "p"})
    parts = urlsplit(uri)
    q = parse_qs(parts.query)
    assert (parts.scheme, parts.username, parts.hostname, parts.path) == ("qemu+ssh", "root", "lab-gpu-1.lab.local", "/system")
    base = "${HOME}/.cache/gpu-stack/hypervisor-ssh/gpu-stack.test.lab-gpu-1"
    assert q == {"keyfile": [f"{base}/id"], "knownhosts": [f"{base}/known_hosts"], "sshauth": ["privkey,agent"]}
    assert "no_verify" not in q and "known_hosts_verify" not in q


def test_the_uri_is_the_same_on_every_run_and_machine(monkeypatch):
    secrets = {"sshPrivateKey": "k", "grafanaAdminPassword": "p"}
    first = _registered_uri(stack_file("dev"), secrets)
    monkeypatch.setenv("HOME", "/somewhere/else")
    assert _registered_uri(stack_file("dev"), secrets) == first


def test_a_local_uri_is_passed_as_written():
    raw = _one_host_stack("qemu:///system", None)
    assert _registered_uri(raw, {"sshPrivateKey": "k", "grafanaAdminPassword": "p"}) == "qemu:///system"


def test_the_program_writes_the_files_before_the_provider_and_removes_the_key(tmp_path, monkeypatch):
    """Under the real engine (not under mocks) the key is written 0600 in a 0700 folder and removed at exit."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(libvirt_backend, "_under_mocks", lambda: False)
    raw = stack_file("dev")
    uri = _registered_uri(raw, {"sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
                                "grafanaAdminPassword": "p"})
    q = parse_qs(urlsplit(uri).query)
    key = connection.expand(q["keyfile"][0], {"HOME": str(tmp_path)})
    known = connection.expand(q["knownhosts"][0], {"HOME": str(tmp_path)})
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    assert known.read_text() == f"lab-gpu-1.lab.local {raw['hosts'][0]['hostKey']}\n"
    connection.remove_written()
    assert not key.exists() and known.exists()


def test_the_hypervisor_key_is_used_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(libvirt_backend, "_under_mocks", lambda: False)
    uri = _registered_uri(stack_file("dev"), {"sshPrivateKey": "guest-key", "hypervisorSshPrivateKey": "hv-key", "grafanaAdminPassword": "p"})
    key = connection.expand(parse_qs(urlsplit(uri).query)["keyfile"][0], {"HOME": str(tmp_path)})
    assert key.read_text() == "hv-key\n"
    connection.remove_written()


def test_nothing_is_written_under_mocks(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _registered_uri(stack_file("dev"), {"sshPrivateKey": "k", "grafanaAdminPassword": "p"})
    assert list(tmp_path.iterdir()) == []


# --- the real SSH client, a real sshd and the real libvirtd ----------------------------------------


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if go is None:
        missing_validator("go is not installed (scripts/build-engine.sh needs it too)")
    out = tmp_path_factory.mktemp("probe") / "libvirt-ssh-probe"
    subprocess.run([go, "build", "-o", str(out), "."], cwd=PROBE, check=True, timeout=600)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """OpenSSH's sshd on a free loopback port, with its own host key and one authorized client key."""
    binary = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if binary is None:
        missing_validator("sshd is not installed (.ci/run installs openssh-server)")
    if not Path(LIBVIRT_SOCK).exists():
        missing_validator(f"libvirtd is not running ({LIBVIRT_SOCK}); scripts/start-libvirtd.sh starts it")
    d = tmp_path_factory.mktemp("sshd")
    host_key, host_pub = _keypair(d, "host_ed25519")
    client_key, client_pub = _keypair(d, "client")
    (d / "authorized_keys").write_text(client_pub + "\n")
    port = _free_port()
    config = d / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {host_key}", f"AuthorizedKeysFile {d}/authorized_keys",
        f"PidFile {d}/sshd.pid", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "AllowStreamLocalForwarding yes", "",
    ]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"port": port, "host_pub": host_pub, "client_key": client_key.read_text()}
    proc.terminate()  # the sshd this fixture started, by its pid
    proc.wait(timeout=10)


def _connect(probe: Path, sshd: dict, home: Path, uri: str, agent: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = str(home)
    if agent:
        env["SSH_AUTH_SOCK"] = agent
    return subprocess.run([str(probe), "-dial", f"127.0.0.1:{sshd['port']}", uri], env=env, capture_output=True, text=True, timeout=60)


def _program_files(tmp_path, monkeypatch, sshd: dict, host_key: str, host: str = "hv.test") -> tuple[Path, str]:
    """Run the program as the real engine would (files written), for a hypervisor `host`; return HOME and the URI."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(libvirt_backend, "_under_mocks", lambda: False)
    raw = _one_host_stack(f"qemu+ssh://{getpass.getuser()}@{host}/system", host_key)
    uri = _registered_uri(raw, {"sshPrivateKey": sshd["client_key"], "grafanaAdminPassword": "p"})
    return home, uri


def test_the_provider_connects_with_what_the_program_gives_it(probe, sshd, tmp_path, monkeypatch):
    home, uri = _program_files(tmp_path, monkeypatch, sshd, sshd["host_pub"])
    done = _connect(probe, sshd, home, uri)
    connection.remove_written()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("libvirt ")


def test_a_host_key_other_than_the_pinned_one_is_refused(probe, sshd, tmp_path, monkeypatch):
    _, other = _keypair(tmp_path, "impostor")
    home, uri = _program_files(tmp_path, monkeypatch, sshd, other)
    done = _connect(probe, sshd, home, uri)
    connection.remove_written()
    assert done.returncode != 0
    assert "knownhosts: key mismatch" in done.stderr


def test_the_bare_uri_fails_as_the_first_real_preview_did(probe, sshd, tmp_path):
    """What the program registered before: the user's URI alone, and a machine with no ~/.ssh/known_hosts."""
    home = tmp_path / "bare-home"
    home.mkdir()
    done = _connect(probe, sshd, home, f"qemu+ssh://{getpass.getuser()}@hv.test/system")
    assert done.returncode != 0
    assert "failed to read ssh known hosts" in done.stderr


def test_a_host_name_with_capitals_is_looked_up_as_written(probe, sshd, tmp_path, monkeypatch):
    """Go's known_hosts matching is byte for byte on the URI's host; urlsplit().hostname would lower-case it."""
    home, uri = _program_files(tmp_path, monkeypatch, sshd, sshd["host_pub"], host="HV.Lab.test")
    done = _connect(probe, sshd, home, uri)
    connection.remove_written()
    assert done.returncode == 0, done.stderr


def test_without_the_key_file_the_agent_is_used(probe, sshd, tmp_path, monkeypatch):
    """`pulumi destroy`/`refresh` without --run-program: the known_hosts file is there, the key file is not."""
    agent_bin, add_bin = require_tool("ssh-agent"), require_tool("ssh-add")
    home, uri = _program_files(tmp_path, monkeypatch, sshd, sshd["host_pub"])
    connection.remove_written()
    key = tmp_path / "agent-key"
    key.write_text(sshd["client_key"])
    key.chmod(0o600)
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen([agent_bin, "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not Path(sock).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run([add_bin, str(key)], env={**os.environ, "SSH_AUTH_SOCK": sock}, check=True, capture_output=True)
        without_agent = _connect(probe, sshd, home, uri)
        with_agent = _connect(probe, sshd, home, uri, agent=sock)
    finally:
        agent.terminate()  # the agent this test started, by its pid
        agent.wait(timeout=10)
    assert without_agent.returncode != 0 and "Failed to read ssh key" in without_agent.stderr
    assert with_agent.returncode == 0, with_agent.stderr


@pytest.mark.parametrize("ending", ["exit", "SIGTERM", "SIGHUP"])
def test_the_key_is_removed_when_the_program_ends_or_is_told_to(tmp_path, ending):
    """atexit for a normal end; SIGTERM and SIGHUP (the CLI cancelling, a closed terminal) remove it too."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from hypervisors.libvirt import connection
files = connection.material("p", "s", "h", "qemu+ssh://root@h/system", "ssh-ed25519 AAAA")
key = connection.write_material(files, "secret-key", {{"HOME": {str(tmp_path)!r}}})
print(key, flush=True)
assert key.read_text() == "secret-key\\n"
if {ending!r} != "exit":
    os.kill(os.getpid(), getattr(signal, {ending!r}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    key = Path(done.stdout.strip())
    assert key.name == "id" and key.is_relative_to(tmp_path), done.stderr
    assert not key.exists()
    assert (key.parent / "known_hosts").read_text() == "h ssh-ed25519 AAAA\n"
    if ending != "exit":
        assert done.returncode == -getattr(signal, ending)
