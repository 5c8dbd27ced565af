"""How the libvirt provider reaches a hypervisor over qemu+ssh, with the stack's key and a pinned host key.

terraform-provider-libvirt v0.8.1 (bridged by pulumi-libvirt 0.5.4) connects when the
provider is configured, so already in `pulumi preview`, and for qemu+ssh it uses its own
Go SSH client (golang.org/x/crypto/ssh), never the system's `ssh`. What that client
reads, from libvirt/uri/ssh.go at v0.8.1 (read 2026-12-06; docs/SOURCES.md):

- `keyfile=PATH`: the private key, read with os.ExpandEnv; without it ~/.ssh/config's
  IdentityFile or ~/.ssh/id_ed25519, id_ecdsa, id_rsa;
- `sshauth=`: the methods in order, default "agent,privkey" (agent = $SSH_AUTH_SOCK);
- `knownhosts=PATH`: the known_hosts file (os.ExpandEnv), default ~/.ssh/known_hosts; a
  missing file fails the connection ("failed to read ssh known hosts");
- `known_hosts_verify=ignore` or `no_verify`: host-key checking off (refused here);
- the known-hosts look-up is for net.JoinHostPort(u.Host, port); u.Host keeps an explicit
  port, so `host:2222` is looked up, and dialled, as `[host:2222]:2222` (a port is refused);
- the client prefers ssh-ed25519 among host key algorithms, so a host with an ed25519
  key presents that one, which is the one to pin.

gpu-stack therefore gives each qemu+ssh provider a URI that names a key file and a
known_hosts file of its own. The paths keep a literal `${HOME}` that the provider
expands, so the URI, a provider input kept in the state, is the same on every machine
and every run (a changing provider input would show as a change in every preview).
The known_hosts file (public) stays, so that `pulumi destroy` and `pulumi refresh`,
which configure the provider from the state without running this program, still
check the host; the key file is written for the run only and removed when the program
exits (those two commands then authenticate with the agent, `sshauth=privkey,agent`).
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MATERIAL_DIR = "${HOME}/.cache/gpu-stack/hypervisor-ssh"
"""Where the provider's key and known_hosts files live; `${HOME}` is expanded by the provider (os.ExpandEnv)."""

OWN_PARAMETERS = ("keyfile", "knownhosts", "sshauth")
"""URI parameters gpu-stack sets itself."""
VERIFY_OFF_PARAMETERS = ("known_hosts_verify", "no_verify")
"""URI parameters that turn host-key checking off in the provider (ssh.go: `known_hosts_verify=ignore`, `no_verify`)."""
AUTH_METHODS = "privkey,agent"
"""The key file first; the agent for `pulumi destroy`/`refresh`, which run without the key file."""

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def pointed_at(host: Any, uri: str) -> Any:
    """A hosts[] entry as Pulumi.<stack>.yaml holds it, pointed at `uri` when it is a libvirt host (kind unset or
    libvirt), its hostKey dropped unless `uri` is qemu+ssh; any other entry as it is (tools/engine.py with_libvirt_uri)."""
    if not (isinstance(host, dict) and host.get("kind", "libvirt") == "libvirt"):
        return host
    host = {**host, "libvirtUri": uri}
    if not is_ssh(uri):
        host.pop("hostKey", None)
    return host


def is_ssh(uri: str) -> bool:
    return urlsplit(uri).scheme.endswith("+ssh")


def uri_problems(uri: str) -> list[str]:
    """What the provider cannot use, or would use without checking the host, in a qemu+ssh URI."""
    parts = urlsplit(uri)
    problems = []
    if not parts.username:
        problems.append("names no user; the provider logs in as the URI's user: write qemu+ssh://root@HOST/system")
    if parts.port is not None:
        problems.append(f"has a port ({parts.port}): terraform-provider-libvirt v0.8.1 joins the port to host:port again "
                        "(libvirt/uri/ssh.go dialHost) and cannot connect; run sshd on port 22 of the hypervisor")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name in VERIFY_OFF_PARAMETERS:
            problems.append(f"sets {name}, which turns off the provider's host-key check; pin the host's key in hostKey instead")
        elif name in OWN_PARAMETERS:
            problems.append(f"sets {name}, which gpu-stack sets itself (the key is gpu-stack:hypervisorSshPrivateKey, "
                            "else gpu-stack:sshPrivateKey; the known host is hostKey); remove it")
    return problems


@dataclass(frozen=True)
class SshMaterial:
    """The files one qemu+ssh provider reads; paths as the provider receives them (with `${HOME}`)."""

    directory: str
    key_file: str
    known_hosts_file: str
    known_hosts_line: str


def material(project: str, stack: str, host_name: str, uri: str, host_key: str) -> SshMaterial:
    directory = f"{MATERIAL_DIR}/{_SAFE.sub('_', project)}.{_SAFE.sub('_', stack)}.{_SAFE.sub('_', host_name)}"
    # the host exactly as written: the provider looks up net.JoinHostPort(u.Host, "22") (knownhosts.Normalize
    # drops the port 22) and Go's known_hosts matching is byte for byte, while urlsplit().hostname lower-cases
    hostname = urlsplit(uri).netloc.rpartition("@")[2]
    return SshMaterial(directory, f"{directory}/id", f"{directory}/known_hosts", f"{hostname} {host_key}\n")


def provider_uri(uri: str, files: SshMaterial | None) -> str:
    """The URI the provider gets: the user's, plus the key, known_hosts and auth parameters for qemu+ssh."""
    if files is None:
        return uri
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("keyfile", files.key_file), ("knownhosts", files.known_hosts_file), ("sshauth", AUTH_METHODS)]
    # `$`, `{`, `}` and `/` stay as written: Go's url.Query() reads them as they are (tests/test_hypervisor_ssh.py)
    return urlunsplit(parts._replace(query=urlencode(query, safe="${}/,")))


def expand(path: str, environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """The provider's os.ExpandEnv of `${HOME}`, done the same way for the files this program writes."""
    home = environ.get("HOME")
    if not home:
        raise RuntimeError("HOME is not set; the libvirt provider finds its SSH key and known_hosts under ${HOME}")
    return Path(path.replace("${HOME}", home))


def write_material(files: SshMaterial, private_key: str, environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """Write the key (0600) and known_hosts into a 0700 directory; the key is queued for removal before it is written."""
    directory = expand(files.directory, environ)
    key = expand(files.key_file, environ)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    remove_at_exit([key])
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(private_key if private_key.endswith("\n") else private_key + "\n")
    expand(files.known_hosts_file, environ).write_text(files.known_hosts_line)
    return key


_WRITTEN: list[Path] = []
_HOOKED = False


def remove_written() -> None:
    """Remove every key this process wrote (known_hosts files stay: they hold no secret)."""
    while _WRITTEN:
        _WRITTEN.pop().unlink(missing_ok=True)


def _on_signal(signum, frame, previous) -> None:
    remove_written()
    if callable(previous):
        previous(signum, frame)
    else:  # SIG_DFL: end as the signal would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def remove_at_exit(paths: list[Path]) -> None:
    """Remove the written keys when the program exits, which is after every resource operation it waited for
    (the SDK waits for each registration's step before the program ends), or when it is told to end (SIGTERM,
    SIGHUP). A SIGKILL leaves the key, 0600 in a 0700 folder, until the next run of the stack overwrites and
    removes it."""
    global _HOOKED
    _WRITTEN.extend(paths)
    if not paths or _HOOKED:
        return
    _HOOKED = True
    atexit.register(remove_written)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(signum)
            if previous is not signal.SIG_IGN:
                signal.signal(signum, lambda n, f, p=previous: _on_signal(n, f, p))


# --- autostart, set only once the domain has started -----------------------------------------------


def local_uri(uri: str) -> str:
    """The hypervisor's own URI for the same driver and instance: qemu+ssh://root@h/system -> qemu:///system."""
    parts = urlsplit(uri)
    return f"{parts.scheme.split('+', 1)[0]}://{parts.path or '/system'}"


def autostart_command(uri: str, domain_name: str) -> str:
    """What marks the domain to start with the host, run on the hypervisor (qemu+ssh) or here (a local URI).

    The Domain is created with autostart off: terraform-provider-libvirt v0.8.1 sets autostart after the
    define and BEFORE the start (resource_libvirt_domain.go resourceLibvirtDomainCreate), so a start that
    fails (VFIO not bound, a group not viable) left an autostarting domain that the host's next boot started,
    and the next `pulumi up` then failed with "domain is already running". Set after a successful create,
    a failed start leaves a shut-off domain that the next `up` redefines and starts (docs/OPERATIONS.md,
    Recovery after a failed start)."""
    target = local_uri(uri) if is_ssh(uri) else uri
    return f"virsh -c {shlex.quote(target)} autostart {shlex.quote(domain_name)}"


def ssh_login(uri: str) -> tuple[str, str]:
    """(host as written, user) of a qemu+ssh URI, for a command run on the hypervisor."""
    parts = urlsplit(uri)
    return parts.netloc.rpartition("@")[2], parts.username or "root"
