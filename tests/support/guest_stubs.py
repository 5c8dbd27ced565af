"""Recording stand-ins for the commands the guest scripts call.

Installed under each command's name on PATH in a sandbox (tests/support/guest_sandbox.py).
Every call is appended to calls.jsonl with a `mutating` flag; a small JSON
model of the guest (packages, modules, units, the node) answers the
read-only queries, so a second run sees what the first one did. Package
versions come from the APT pins the scripts write (or the dnf NEVRA they ask
for), so a wrong pin shows up as a wrong installed version.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
import time
from pathlib import Path

class _Env:
    """The sandbox paths, read when a stub runs (not when the tests import this module)."""

    def __getattr__(self, name: str) -> Path:
        return Path(os.environ[{"SANDBOX": "GS_SANDBOX", "ROOT": "GS_ROOT"}[name]])


_env = _Env()


def load() -> dict:
    return json.loads((_env.SANDBOX / "state.json").read_text())


def save(state: dict) -> None:
    (_env.SANDBOX / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))


def record(cmd: str, argv: list[str], mutating: bool) -> None:
    with (_env.SANDBOX / "calls.jsonl").open("a") as f:
        f.write(json.dumps({"cmd": cmd, "argv": argv, "mutating": mutating}) + "\n")


def out(text: str) -> None:
    sys.stdout.write(text)


# --- packages -----------------------------------------------------------------

def _apt_pin(name: str) -> str | None:
    prefs = _env.ROOT / "etc/apt/preferences.d"
    if not prefs.is_dir():
        return None
    for path in sorted(prefs.iterdir()):
        for block in path.read_text().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
            pattern = fields.get("Package", "")
            version = fields.get("Pin", "").removeprefix("version ").rstrip("*").rstrip("-")
            if pattern.startswith("/") and re.search(pattern.strip("/"), name) or name in pattern.split():
                return version + "-1"
    return None


def _apt_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(-o NAME=VALUE options, the other arguments)."""
    options: dict[str, str] = {}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            name, _, value = next(it).partition("=")
            options[name] = value
        else:
            rest.append(arg)
    return options, rest


# --- vendor repositories ----------------------------------------------------------
# A stock cloud image has its distribution's repositories only. The packages below come from a
# vendor repository, which apt sees after a source for it is written and `apt-get update` has
# read it (with its signed-by keyring present), and dnf sees while a .repo file enables it.
# Which one a source is, is told by its layout (the vendor's URL or a mirror of it).
VENDOR_PACKAGES = {
    "nvidia-container-toolkit": ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools", "libnvidia-container1"),
    "docker": ("docker-ce", "docker-ce-cli", "containerd.io"),
    "kubernetes": ("kubeadm", "kubelet", "kubectl"),
}
CUDA_EL_PACKAGES = ("nvidia-driver", "kmod-nvidia", "nvidia-fabric", "libnvidia-nscq", "nvidia-kmod-common", "nvidia-persistenced", "nvlsm")
"""From NVIDIA's CUDA repository on EL (render/nvidia_packages.py); on Ubuntu only nvlsm is not in the archive."""
LAYOUTS = (
    ("nvidia-container-toolkit", re.compile(r"/stable/(deb/\$\(ARCH\)|rpm/\$basearch)$")),
    ("cuda", re.compile(r"/(ubuntu\d{4}|rhel\d+)/x86_64/?$")),
    ("docker", re.compile(r"/(ubuntu|centos|rhel)(/\$releasever/\$basearch/stable)?$")),
    ("kubernetes", re.compile(r"/(deb|rpm)/?$")),
)


def _repo_kind(url: str) -> str | None:
    return next((kind for kind, layout in LAYOUTS if layout.search(url)), None)


def _needed_repo(family: str, name: str) -> str | None:
    for kind, names in VENDOR_PACKAGES.items():
        if name in names:
            return kind
    if name == "nvlsm" or family == "rhel" and name.startswith(CUDA_EL_PACKAGES):
        return "cuda"
    return None


def _unreachable(url: str) -> int:
    """curl's exit status for a URL the state makes fail: 7 (cannot connect) or 22 (HTTP 404 with -f)."""
    state = load()
    if any(url.startswith(prefix) for prefix in state.get("unreachable", [])):
        return 7
    if any(url.startswith(prefix) for prefix in state.get("missing", [])):
        return 22
    return 0


def _apt_sources() -> list[tuple[str, str | None]]:
    """(URL, signed-by keyring) of every active deb line in sources.list.d (sources.list(5) one-line form)."""
    found = []
    folder = _env.ROOT / "etc/apt/sources.list.d"
    for path in sorted(folder.glob("*.list")) if folder.is_dir() else ():
        for line in path.read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                options = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
                found.append((m.group(2).rstrip("/"), options.get("signed-by")))
    return found


def _os_version() -> str:
    text = (_env.ROOT / "etc/os-release").read_text()
    return re.search(r'^VERSION_ID="?([^"\n]*)', text, re.M).group(1)


def _dnf_repos() -> list[str]:
    """baseurl of every enabled section of /etc/yum.repos.d/*.repo (dnf.conf(5) repo options)."""
    import configparser
    urls = []
    folder = _env.ROOT / "etc/yum.repos.d"
    for path in sorted(folder.glob("*.repo")) if folder.is_dir() else ():
        parser = configparser.RawConfigParser()
        parser.read_string(path.read_text())
        for section in parser.sections():
            if parser.get(section, "enabled", fallback="1") == "1" and parser.has_option(section, "baseurl"):
                urls.append(parser.get(section, "baseurl"))
    return urls


def _dnf_kinds() -> set[str]:
    return {kind for url in _dnf_repos() if not _unreachable(url) and (kind := _repo_kind(url))}


def apt_get(argv: list[str]) -> int:
    """Like apt: the dpkg lock held by unattended-upgrades fails a call unless it waits
    (DPkg::Lock::Timeout); the lists lock of a running apt-daily fails `update` whatever the option."""
    state = load()
    options, rest = _apt_options(argv)
    if rest and rest[0] == "update" and state.get("lists_lock_held"):
        record("apt-get", argv, False)
        sys.stderr.write("E: Could not get lock /var/lib/apt/lists/lock. It is held by process 811 (apt-get)\n")
        return 100
    if state.get("dpkg_lock_held"):
        if int(options.get("DPkg::Lock::Timeout", "0") or 0) <= 0:
            record("apt-get", argv, False)
            sys.stderr.write("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (unattended-upgr)\n")
            return 100
        state["dpkg_lock_held"] = False  # the holder finished while apt-get waited
        state.setdefault("waited_for_lock", []).append(" ".join(rest[:1]))
        save(state)
    argv = rest
    if argv and argv[0] == "update":
        record("apt-get", argv, True)
        # apt-get update: an unsigned source (keyring missing) is an error, "E: The repository '...'
        # is not signed."; an unreachable one "E: Failed to fetch ..." and exit 100 (apt-get(8): 100 on error)
        kinds = []
        for url, keyring in _apt_sources():
            if keyring is None or not (_env.ROOT / keyring.lstrip("/")).is_file():
                sys.stderr.write(f"E: The repository '{url}' is not signed.\n")
                return 100
            if _unreachable(url):
                sys.stderr.write(f"E: Failed to fetch {url}/InRelease  Could not connect\n")
                return 100
            if kind := _repo_kind(url):
                kinds.append(kind)
        state["apt_lists"] = sorted(set(kinds))
        save(state)
        return 0
    if "install" in argv:
        record("apt-get", argv, True)
        for arg in argv[argv.index("install") + 1:]:
            if arg.startswith("-"):
                continue
            if arg.endswith(".deb"):
                # a local package file; cuda-keyring brings NVIDIA's key and the CUDA source (its .list)
                name = Path(arg).name.split("_", 1)[0]
                state["packages"][name] = Path(arg).name.split("_")[1]
                if name == "cuda-keyring":
                    distro = "ubuntu" + _os_version().replace(".", "")
                    (_env.ROOT / "usr/share/keyrings").mkdir(parents=True, exist_ok=True)
                    (_env.ROOT / "usr/share/keyrings/cuda-archive-keyring.gpg").write_bytes(b"key")
                    (_env.ROOT / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
                    (_env.ROOT / f"etc/apt/sources.list.d/cuda-{distro}-x86_64.list").write_text(
                        "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
                        f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64/ /\n")
                continue
            name, _, version = arg.partition("=")
            kind = _needed_repo("ubuntu", name)
            if kind and kind not in state.get("apt_lists", []):
                sys.stderr.write(f"E: Unable to locate package {name}\n")
                save(state)
                return 100
            state["packages"][name] = version or _apt_pin(name) or "1.0-1"
            _install_files(state, name)
            if name.startswith("linux-modules-nvidia-") and re.search(r"-\d+\.\d+\.\d+-\d+-", name):
                # Canonical's module build for one kernel: its driver version is whatever they built
                state["driver_installed"] = state.get("precompiled_driver", "")
                state["module_flavour"] = "open" if "-open-" in name else "proprietary"
            elif name.startswith("nvidia-headless-") and "-no-dkms-" not in name:
                state["driver_installed"] = state["packages"][name].rsplit("-", 1)[0]  # DKMS builds the pinned one
                state["module_flavour"] = "open" if name.endswith("-open") else "proprietary"
        save(state)
        return 0
    record("apt-get", argv, True)
    return 0


def apt_cache(argv: list[str]) -> int:
    """`apt-cache show NAME`: found when NAME is in the state's archive list (precompiled modules per kernel)."""
    record("apt-cache", argv, False)
    name = argv[-1]
    if name in load().get("archive", []):
        out(f"Package: {name}\nVersion: 1.0-1\n\n")
        return 0
    sys.stderr.write(f"E: No packages found\n")
    return 100


def uname(argv: list[str]) -> int:
    record("uname", argv, False)
    if argv == ["-r"]:
        out(load().get("kernel", "6.8.0-45-generic") + "\n")
        return 0
    os.execv("/bin/uname", ["uname", *argv])


def apt_mark(argv: list[str]) -> int:
    state = load()
    if argv[0] == "showhold":
        record("apt-mark", argv, False)
        out("".join(f"{p}\n" for p in sorted(state["held"])))
        return 0
    record("apt-mark", argv, True)
    if argv[0] == "hold":
        state["held"] = sorted(set(state["held"]) | set(argv[1:]))
        save(state)
    return 0


FM_BINARY = "/usr/bin/nv-fabricmanager"
FM_PACKAGE = re.compile(r"^nvidia-fabric-?manager(-\d+)?$")
NSCQ_PACKAGE = re.compile(r"^libnvidia-nscq(-\d+)?$")
EL_DRIVER_CUDA_REQUIRES = ("nvidia-driver-cuda-libs", "nvidia-kmod-common", "nvidia-persistenced")
MODULE_PACKAGES = ("nvidia-driver", "kmod-nvidia", "nvidia-fabric", "libnvidia-nscq")
"""The packages of module nvidia-driver in NVIDIA's CUDA repository for EL (profiles default, ks, fm, src)."""


def _install_files(state: dict, name: str) -> None:
    """The files a package brings that the scripts ask dpkg -S / rpm -qf about: Fabric Manager's daemon.
    A name in state["transitional"] ({name: [target, version]}) is an empty package whose dependency,
    installed with it, holds the files (Ubuntu's -<branch> packages once the branch has ended)."""
    if name in state.get("transitional", {}):
        target, version = state["transitional"][name]
        state["packages"][target] = version
        name = target
    for family in (FM_PACKAGE, NSCQ_PACKAGE):
        if family.match(name):
            # Canonical's -<branch> packages Provide and Conflict the unbranched name (debian/control):
            # installing one branch removes another's package and files
            keep = {name} | {t for t, (target, _) in state.get("transitional", {}).items() if target == name}
            for other in [p for p in state["packages"] if family.match(p) and p not in keep]:
                del state["packages"][other]
                state["files"] = {f: o for f, o in state.get("files", {}).items() if o != other}
    if FM_PACKAGE.match(name):
        state.setdefault("files", {})[FM_BINARY] = name
    if NSCQ_PACKAGE.match(name):
        version = state["packages"].get(name, "").split("-")[0]
        state.setdefault("files", {})[f"/usr/lib/x86_64-linux-gnu/libnvidia-nscq.so.{version}"] = name


def dpkg_query(argv: list[str]) -> int:
    record("dpkg-query", argv, False)
    state = load()
    name = argv[-1]
    if "-S" in argv:
        # dpkg -S: an absolute path matches itself; any other pattern matches every path containing it (fnmatch)
        files = state.get("files", {})
        found = {p: o for p, o in files.items() if p == name} if name.startswith("/") else \
            {p: o for p, o in files.items() if fnmatch.fnmatch(p, f"*{name}*")}
        if not found:
            sys.stderr.write(f"dpkg-query: no path found matching pattern {name}\n")
            return 1
        out("".join(f"{o}: {p}\n" for p, o in sorted(found.items())))
        return 0
    if name not in state["packages"]:
        return 1
    fmt = next(a for a in argv if a.startswith("-f="))
    out("install ok installed" if "Status" in fmt else state["packages"][name])
    return 0


def _rpm_split(spec: str) -> tuple[str, str]:
    m = re.match(r"^(?P<name>.+?)-(?P<version>\d[\w.]*)$", spec)
    return (m.group("name"), m.group("version")) if m else (spec, "1.0")


def dnf(argv: list[str]) -> int:
    state = load()
    if argv[:2] == ["versionlock", "list"]:
        record("dnf", argv, False)
        out("".join(f"{p}-0:{state['packages'].get(p, '0')}.*\n" for p in sorted(state["versionlock"])))
        return 0
    words = [a for a in argv if not a.startswith("-")]
    if words[:1] == ["module"]:
        return _dnf_module(words[1:], argv, state)
    record("dnf", argv, True)
    if argv[:2] == ["versionlock", "add"]:
        state["versionlock"] = sorted(set(state["versionlock"]) | set(argv[2:]))
    elif "install" in argv:
        kinds = _dnf_kinds()
        for arg in argv[argv.index("install") + 1:]:
            if not arg.startswith("-"):
                name, version = _rpm_split(arg)
                kind = _needed_repo("rhel", name)
                if kind and kind not in kinds:
                    # dnf(8): "No match for argument: X", "Error: Unable to find a match: X", exit 1
                    sys.stderr.write(f"No match for argument: {arg}\nError: Unable to find a match: {arg}\n")
                    return 1
                stream = state.get("dnf_module_stream")
                if name.startswith(MODULE_PACKAGES) and state.get("dnf_module_streams") and not stream:
                    return 1  # a module's packages outside an enabled stream are filtered out
                state["packages"][name] = version
                _install_files(state, name)
                if name in ("nvidia-driver", "nvidia-driver-cuda"):
                    state["driver_installed"] = version
                if name == "nvidia-driver-cuda" and int(version.split(".")[0]) >= 560:
                    # its Requires from 560 (NVIDIA/yum-packaging-nvidia-driver nvidia-driver.spec), at its version
                    for dependency in EL_DRIVER_CUDA_REQUIRES:
                        state["packages"].setdefault(dependency, version)
    save(state)
    return 0


def _dnf_module(words: list[str], argv: list[str], state: dict) -> int:
    """dnf module list/reset/enable for module nvidia-driver; the enabled stream lives where dnf keeps it."""
    streams = state.get("dnf_module_streams") or []
    persisted = _env.ROOT / "etc/dnf/modules.d/nvidia-driver.module"
    verb = words[0]
    record("dnf", argv, verb != "list")
    if verb == "list":
        # the module's metadata is in NVIDIA's CUDA repository only
        return 0 if streams and "cuda" in _dnf_kinds() else 1
    if verb == "reset":
        state["dnf_module_stream"] = None
    elif verb == "enable":
        stream = words[1].split(":", 1)[1]
        if stream not in streams:
            return 1
        current = state.get("dnf_module_stream")
        if current and current != stream:
            return 1  # "It is not possible to switch enabled streams of a module unless explicitly enabled"
        state["dnf_module_stream"] = stream
    stream = state.get("dnf_module_stream") or ""
    persisted.parent.mkdir(parents=True, exist_ok=True)
    persisted.write_text(f"[nvidia-driver]\nname=nvidia-driver\nstream={stream}\nprofiles=\nstate={'enabled' if stream else ''}\n")
    save(state)
    return 0


def rpm(argv: list[str]) -> int:
    record("rpm", argv, False)
    state = load()
    name = argv[-1]
    if "-qf" in argv:
        owner = state.get("files", {}).get(name)
        if owner is None:
            out(f"file {name} is not owned by any package")
            return 1
        out(owner)
        return 0
    if name not in state["packages"]:
        return 1
    if "--qf" in argv:
        out(state["packages"][name])
    return 0


# --- system -------------------------------------------------------------------

IS_ACTIVE_STATES = ("active", "reloading", "refreshing")
"""The ActiveStates `systemctl is-active` exits 0 for (systemd src/systemctl/systemctl-is-active.c verb_is_active);
any other state exits 3 (LSB "program is not running"), 4 when no named unit exists."""


def _active_state(state: dict, unit: str) -> str | None:
    """One query of UNIT's ActiveState (org.freedesktop.systemd1(5)); None: no such unit (systemctl prints inactive).

    state["activating"] = {unit: n}: a Type=oneshot unit whose ExecStart is running is "activating" until the
    command exits (systemd.service(5)); it reads activating for n more queries, then inactive (no
    RemainAfterExit). apt-daily.service's `apt-get update` holds the lists lock until then."""
    activating = state.get("activating", {})
    if activating.get(unit, 0) > 0:
        activating[unit] -= 1
        if activating[unit] == 0 and unit == "apt-daily.service":
            state["lists_lock_held"] = False
        return "activating"
    entry = state["units"].get(unit)
    if entry is None:
        return None
    return entry.get("state") or ("active" if entry.get("active") else "inactive")


def systemctl(argv: list[str]) -> int:
    state = load()
    quiet = "--quiet" in argv or "-q" in argv
    args = [a for a in argv if not a.startswith("-")]
    verb, units = args[0], args[1:]
    units_state = state["units"]
    if verb == "show":
        # only `show -p ActiveState --value UNIT`: the property's value alone, exit 0 (a missing unit reads inactive)
        record("systemctl", argv, False)
        prop = argv[argv.index("-p") + 1]
        assert prop == "ActiveState" and "--value" in argv, f"stub models show -p ActiveState --value only: {argv}"
        units = [a for a in args[1:] if a != prop]
        out("".join(f"{_active_state(state, u) or 'inactive'}\n" for u in units))
        save(state)
        return 0
    if verb == "is-active":
        # systemctl(1): prints each unit's state unless --quiet; exit 0 if at least one is active
        record("systemctl", argv, False)
        states = [_active_state(state, u) for u in units]
        save(state)
        if not quiet:
            out("".join(f"{s or 'inactive'}\n" for s in states))
        if any(s in IS_ACTIVE_STATES for s in states):
            return 0
        return 4 if all(s is None for s in states) else 3
    if verb == "is-enabled":
        record("systemctl", argv, False)
        return 0 if all(units_state.get(u, {}).get("enabled") for u in units) else 1
    if verb == "status":
        record("systemctl", argv, False)
        status = state.get("status_outputs", {})
        out("".join(Path(status[u]).read_text() for u in units if u in status))
        return 0 if all(units_state.get(u, {}).get("active") for u in units) else 3
    record("systemctl", argv, True)
    for u in units:
        entry = units_state.setdefault(u, {"enabled": False, "active": False})
        entry.pop("state", None)
        if verb == "enable":
            entry["enabled"] = True
            entry["active"] = entry["active"] or "--now" in argv
        elif verb == "disable":
            entry["enabled"] = False
            entry["active"] = entry["active"] and "--now" not in argv
        elif verb in ("start", "restart"):
            entry["active"] = True
        elif verb == "stop":
            entry["active"] = False
    save(state)
    return 0


def modprobe(argv: list[str]) -> int:
    state = load()
    record("modprobe", argv, True)
    if argv[0] == "-r":
        for m in argv[1:]:
            if m == "nouveau" and state["nouveau_in_use"]:
                return 1
            if m in state["modules"]:
                state["modules"].remove(m)
        if "nvidia" in argv[1:]:
            state["driver_loaded"] = None
    else:
        m = argv[0]
        state["modules"] = sorted(set(state["modules"]) | {m})
        if m == "nvidia":
            state["driver_loaded"] = state["driver_installed"]
            (_env.ROOT / "sys/module/nvidia").mkdir(parents=True, exist_ok=True)
            (_env.ROOT / "sys/module/nvidia/version").write_text(f"{state['driver_installed']}\n")
    save(state)
    return 0


def lsmod(argv: list[str]) -> int:
    record("lsmod", argv, False)
    out("Module                  Size  Used by\n" + "".join(f"{m} 16384 0\n" for m in load()["modules"]))
    return 0


def swapon(argv: list[str]) -> int:
    record("swapon", argv, False)
    if load()["swap"]:
        out("/swap.img file 2G 0B -2\n")
    return 0


def swapoff(argv: list[str]) -> int:
    record("swapoff", argv, True)
    state = load()
    state["swap"] = False
    save(state)
    return 0


def hostnamectl(argv: list[str]) -> int:
    state = load()
    if argv[0] == "--static":
        record("hostnamectl", argv, False)
        out(state["hostname"] + "\n")
        return 0
    record("hostnamectl", argv, True)
    state["hostname"] = argv[1]
    save(state)
    return 0


def hostname(argv: list[str]) -> int:
    record("hostname", argv, False)
    out("192.168.122.50 \n")
    return 0


def getenforce(argv: list[str]) -> int:
    record("getenforce", argv, False)
    out(load()["selinux"] + "\n")
    return 0


def setenforce(argv: list[str]) -> int:
    record("setenforce", argv, True)
    state = load()
    state["selinux"] = "Permissive" if argv[0] == "0" else "Enforcing"
    save(state)
    return 0


def mokutil(argv: list[str]) -> int:
    record("mokutil", argv, False)
    out(f"SecureBoot {'enabled' if load()['secure_boot'] else 'disabled'}\n")
    return 0


def lspci(argv: list[str]) -> int:
    record("lspci", argv, False)
    state = load()
    lines = [f"0000:{i + 1:02x}:00.0 0302: 10de:2324 (rev a1)\n" for i in range(state["lspci_gpus"])]
    lines += [f"0000:{0x80 + i:02x}:00.0 0680: 10de:22a3 (rev a1)\n" for i in range(state["lspci_nvswitches"])]
    out("".join(lines))
    return 0


def df(argv: list[str]) -> int:
    record("df", argv, False)
    out(f"Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda1 209715200 1000 {load()['df_avail_kib']} 1% /\n")
    return 0


def cloud_init(argv: list[str]) -> int:
    """`cloud-init status`: exit 0 done, 2 recoverable errors (degraded), 1 error (cloudinit/cmd/status.py).

    state["cloud_init_status"]: "disabled", "not started" or "running" instead of the finished states. As in
    handle_status_args (canonical/cloud-init 26.2), `--wait` polls for as long as the status is "not started" or
    "running" (here: never returns; capped at 120 s so no stub outlives a test) and returns at once for "disabled"."""
    record("cloud-init", argv, False)
    state = load()
    rc = state.get("cloud_init_rc", 0)
    running = state.get("cloud_init_status")
    if running is not None:
        if "--wait" in argv and running in ("not started", "running"):
            time.sleep(120)
            return 1
        out(f"status: {running}\n")
        return 0
    status, extended = {0: ("done", "done"), 2: ("done", "degraded done"), 1: ("error", "error - done")}[rc]
    out(f"status: {status}\n")
    if "--long" in argv and rc:
        out(f"extended_status: {extended}\nboot_status_code: enabled-by-generator\n"
            "recoverable_errors:\nWARNING:\n\t- Failed to create group sudo\n")
    return rc


def systemd_run(argv: list[str]) -> int:
    record("systemd-run", argv, True)
    state = load()
    state["reboot_scheduled"] = True
    save(state)
    return 0


def initramfs(name: str, argv: list[str]) -> int:
    record(name, argv, True)
    return 0


# --- NVIDIA -------------------------------------------------------------------

def nvidia_smi(argv: list[str]) -> int:
    state = load()
    mutating = argv[:1] == ["-pm"]
    record("nvidia-smi", argv, mutating)
    if not state["driver_loaded"]:
        sys.stderr.write("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")
        return 9
    n = state["lspci_gpus"]
    version = state["driver_loaded"]
    if mutating:
        state["persistence"] = True
        save(state)
        return 0
    captured = state.get("smi_outputs", {})  # real nvidia-smi output (tests/fixtures/nvidia-smi) by subcommand
    key = {("-L",): "L", ("topo", "-m"): "topo", ("nvlink", "-s"): "nvlink", ("-q",): "q"}.get(tuple(argv))
    if key in captured:
        out(Path(captured[key]).read_text())
        return 0
    if argv == ["-L"]:
        out("".join(f"GPU {i}: NVIDIA H800 (UUID: GPU-{i:08d}-0000-0000-0000-000000000000)\n" for i in range(n)))
    elif argv and argv[0].startswith("--query-gpu=persistence_mode"):
        out(("Enabled\n" if state["persistence"] else "Disabled\n") * n)
    elif argv and argv[0].startswith("--query-gpu=index"):
        out("".join(f"{i}, NVIDIA H800, GPU-{i:08d}-0000-0000-0000-000000000000, 00000000:{i + 1:02X}:00.0, {version}, 81559 MiB\n" for i in range(n)))
    elif argv[:1] in (["topo"], ["nvlink"]):
        out(f"{argv[0]} ok\n")
    else:
        out(f"| NVIDIA-SMI {version}             Driver Version: {version}     CUDA Version: 12.8     |\n")
    return 0


def nvidia_ctk(argv: list[str]) -> int:
    record("nvidia-ctk", argv, False)  # edits the temp file it is given; the install is what counts
    runtime = next(a.split("=", 1)[1] for a in argv if a.startswith("--runtime="))
    path = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--config=")))
    default = "--set-as-default" in argv
    if runtime == "containerd":
        text = path.read_text()
        if default:
            text = re.sub(r"default_runtime_name = (['\"])runc\1", 'default_runtime_name = "nvidia"', text)
        # like nvidia-ctk: the nvidia runtime copies runc's options (so its cgroup driver), under the
        # CRI plugin ID of the config's version (3: io.containerd.cri.v1.runtime, 2: io.containerd.grpc.v1.cri)
        plugin = "'io.containerd.cri.v1.runtime'" if re.search(r"^version = 3", text, re.M) else '"io.containerd.grpc.v1.cri"'
        systemd = re.search(r"runtimes\.runc\.options\]\n(?:[ \t]+\w+ = .*\n)*?[ \t]+SystemdCgroup = true", text) is not None
        text += (f'\n[plugins.{plugin}.containerd.runtimes.nvidia]\n  runtime_type = "io.containerd.runc.v2"\n'
                 f'  [plugins.{plugin}.containerd.runtimes.nvidia.options]\n    BinaryName = "/usr/bin/nvidia-container-runtime"\n'
                 + ("    SystemdCgroup = true\n" if systemd else ""))
        path.write_text(text)
    else:
        doc = json.loads(path.read_text())
        doc["runtimes"] = {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
        if default:
            doc["default-runtime"] = "nvidia"
        path.write_text(json.dumps(doc, indent=4, sort_keys=True) + "\n")
    return 0


CONTAINERD_DEFAULT = """version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
"""


CONTAINERD_2_DEFAULT = Path(__file__).resolve().parent.parent / "fixtures/containerd/config-default.containerd-2.1.4.toml"
"""containerd 2.x: config version 3, no SystemdCgroup line, literal-string quoting (tests/fixtures/containerd/PROVENANCE.md)."""


def containerd(argv: list[str]) -> int:
    record("containerd", argv, False)
    if argv == ["config", "default"]:
        out(CONTAINERD_2_DEFAULT.read_text() if load().get("containerd_major") == 2 else CONTAINERD_DEFAULT)
    elif argv == ["config", "dump"]:
        out((_env.ROOT / "etc/containerd/config.toml").read_text())
    return 0


def docker(argv: list[str]) -> int:
    record("docker", argv, False)
    doc = json.loads((_env.ROOT / "etc/docker/daemon.json").read_text())
    out(json.dumps({**doc.get("runtimes", {}), "runc": {}}) + "\n")
    return 0


def curl(argv: list[str]) -> int:
    """curl -f: exit 7 "Couldn't connect to server" or 22 "The requested URL returned error: 404"
    (curl(1), EXIT CODES) for what the state makes unreachable or missing; the proxy it was given
    (https_proxy / http_proxy, curl(1) ENVIRONMENT) is kept in the state's fetches."""
    url = argv[-1]
    target = argv[argv.index("-o") + 1] if "-o" in argv else None
    record("curl", argv, target not in (None, "/dev/null"))
    state = load()
    proxy = os.environ.get("https_proxy" if url.startswith("https://") else "http_proxy", "")
    state.setdefault("fetches", []).append({"url": url, "proxy": proxy})
    save(state)
    status = _unreachable(url)
    if status == 7:
        host = url.split("/")[2]
        sys.stderr.write(f"curl: (7) Failed to connect to {host} port 443 after 3 ms: Couldn't connect to server\n")
        return 7
    if status == 22:
        sys.stderr.write("curl: (22) The requested URL returned error: 404\n")
        return 22
    if target == "/dev/null":
        return 0
    if target:
        Path(target).write_text("#!/bin/sh\n# installer\n")
    else:
        out("-----BEGIN PGP PUBLIC KEY BLOCK-----\nstub\n")
    return 0


def gpg(argv: list[str]) -> int:
    record("gpg", argv, True)
    Path(argv[argv.index("-o") + 1]).write_bytes(sys.stdin.buffer.read())
    return 0


def sh(argv: list[str]) -> int:
    script = argv[0] if argv else ""
    if not script.endswith(".run"):
        os.execv("/bin/sh", ["sh", *argv])
    record("sh", argv, True)
    state = load()
    name = Path(script).name
    if name.startswith("NVIDIA-Linux"):
        state["driver_installed"] = name.split("x86_64-")[1].removesuffix(".run")
    elif name.startswith("cuda_"):
        minor = ".".join(name.split("_")[1].split(".")[:2])
        nvcc = _env.ROOT / f"usr/local/cuda-{minor}/bin/nvcc"
        nvcc.parent.mkdir(parents=True, exist_ok=True)
        nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {minor}, V{minor}.0'\n")
        nvcc.chmod(0o755)
    save(state)
    return 0


# --- Kubernetes -----------------------------------------------------------------

def _new_token(state: dict) -> str:
    n = len(state["tokens"])
    return f"tok{n:03d}." + f"{n:016d}"


def kubeadm(argv: list[str]) -> int:
    state = load()
    if argv[:2] == ["token", "list"]:
        record("kubeadm", argv, False)
        out("".join(f"{t}\n" for t in state["tokens"]))
        return 0
    record("kubeadm", argv, True)
    kube = _env.ROOT / "etc/kubernetes"
    if argv[0] == "init":
        (kube / "pki").mkdir(parents=True, exist_ok=True)
        (kube / "admin.conf").write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n")
        (kube / "kubelet.conf").write_text("apiVersion: v1\nkind: Config\n")  # kubeadm init writes the kubelet's too
        (kube / "pki/ca.crt").write_text((_env.SANDBOX / "ca.crt").read_text())
        ttl = argv[argv.index("--token-ttl") + 1] if "--token-ttl" in argv else "24h0m0s"
        token = argv[argv.index("--token") + 1] if "--token" in argv else _new_token(state)
        state["tokens"].append(token)
        state["token_ttls"] = {**state.get("token_ttls", {}), token: ttl}
        # what kubeadm init's phases leave besides (kubeadm init docs: kubelet-start, control-plane): the
        # kubelet running, and the static Pod manifest of the API server at the version asked for
        version = argv[argv.index("--kubernetes-version") + 1]
        (kube / "manifests").mkdir(parents=True, exist_ok=True)
        (kube / "manifests/kube-apiserver.yaml").write_text(f"spec:\n  containers:\n  - image: registry.k8s.io/kube-apiserver:{version}\n")
        state["units"].setdefault("kubelet", {})["active"] = True
        minor = int(argv[argv.index("--kubernetes-version") + 1].lstrip("v").split(".")[1])
        # what kubeadm applies: master up to 1.23, both in 1.24, control-plane from 1.25
        roles = ["master"] if minor < 24 else ["master", "control-plane"] if minor == 24 else ["control-plane"]
        state["node"] = {"labels": {"kubernetes.io/hostname": argv[argv.index("--node-name") + 1]},
                         "taints": [f"node-role.kubernetes.io/{r}=:NoSchedule" for r in roles]}
    elif argv[0] == "join":
        kube.mkdir(parents=True, exist_ok=True)
        (kube / "kubelet.conf").write_text("apiVersion: v1\nkind: Config\n")
        state["units"].setdefault("kubelet", {})["active"] = True  # kubeadm join's kubelet-start
    elif argv[:2] == ["token", "create"]:
        token = argv[2] if len(argv) > 2 and not argv[2].startswith("-") else _new_token(state)
        state["tokens"].append(token)
        state["token_ttls"] = {**state.get("token_ttls", {}), token: argv[argv.index("--ttl") + 1] if "--ttl" in argv else "24h0m0s"}
        save(state)
        out(token + "\n")
        return 0
    elif argv[0] == "reset":
        for name in ("admin.conf", "kubelet.conf"):
            (kube / name).unlink(missing_ok=True)
    save(state)
    return 0


def _kubectl_jsonpath(argv: list[str], state: dict) -> int:
    """Read-only queries of the readiness gate: node Ready, allocatable, Job conditions."""
    record("kubectl", argv, False)
    args = list(argv)
    ns = None
    if args[0] == "-n":
        ns, args = args[1], args[2:]
    kind, name, path = args[1], args[2], args[args.index("-o") + 1]
    cluster = state.get("cluster", {})
    if kind == "node":
        node = cluster.get("nodes", {}).get(name)
        if node is None:
            sys.stderr.write(f'Error from server (NotFound): nodes "{name}" not found\n')
            return 1
        if "Ready" in path:
            out(node.get("ready", "False"))
        else:
            resource = path.split("allocatable.", 1)[1].rstrip("}").replace("\\.", ".")
            out(str(node.get("allocatable", {}).get(resource, "")))
        return 0
    job = cluster.get("jobs", {}).get(f"{ns}/{name}")
    if job is None:
        sys.stderr.write(f'Error from server (NotFound): jobs.batch "{name}" not found\n')
        return 1
    out("".join(f"{c} " for c in job))
    return 0


def kubectl(argv: list[str]) -> int:
    state = load()
    if any(a.startswith("jsonpath=") for a in argv):
        return _kubectl_jsonpath(argv, state)
    node = state["node"]
    if argv[0] == "get":
        record("kubectl", argv, False)
        template = next(a for a in argv if a.startswith("go-template=") or "{{" in a)
        if "taints" in template:
            out("".join(f"{t}\n" for t in node["taints"]))
        else:
            out("".join(f"{k}={v}\n" for k, v in sorted(node["labels"].items())))
        return 0
    record("kubectl", argv, True)
    if argv[0] == "taint":
        spec = argv[-1]
        if spec.endswith("-"):
            key = spec[:-1].split(":")[0].split("=")[0]
            node["taints"] = [t for t in node["taints"] if not t.startswith(key + "=")]
        else:
            node["taints"] = [t for t in node["taints"] if not t.startswith(spec.split("=")[0] + "=")] + [spec]
    elif argv[0] == "label":
        k, v = argv[-1].split("=", 1)
        node["labels"][k] = v
    save(state)
    return 0


HANDLERS = {
    "apt-get": apt_get, "apt-cache": apt_cache, "uname": uname, "apt-mark": apt_mark, "dpkg-query": dpkg_query, "dnf": dnf, "rpm": rpm,
    "systemctl": systemctl, "modprobe": modprobe, "lsmod": lsmod, "swapon": swapon, "swapoff": swapoff,
    "hostnamectl": hostnamectl, "hostname": hostname, "getenforce": getenforce, "setenforce": setenforce,
    "mokutil": mokutil, "lspci": lspci, "df": df, "cloud-init": cloud_init, "systemd-run": systemd_run,
    "update-initramfs": lambda a: initramfs("update-initramfs", a), "dracut": lambda a: initramfs("dracut", a),
    "sysctl": lambda a: (record("sysctl", a, True), 0)[1],
    "nvidia-smi": nvidia_smi, "nvidia-ctk": nvidia_ctk, "containerd": containerd, "docker": docker,
    "curl": curl, "gpg": gpg, "sh": sh, "kubeadm": kubeadm, "kubectl": kubectl,
}


def main() -> None:
    name = Path(sys.argv[0]).name
    sys.exit(HANDLERS[name](sys.argv[1:]))


if __name__ == "__main__":
    main()


# --- day 2 (issue 16): upgrades -------------------------------------------------
# Kept in one block: cordon/drain/uncordon and the API server version for kubectl,
# `kubeadm upgrade`, modinfo, nvidia-smi's UUID and fabric queries, dnf versionlock
# delete. Everything else goes to the handlers above.

_base_kubectl, _base_kubeadm, _base_nvidia_smi, _base_dnf = kubectl, kubeadm, nvidia_smi, dnf


def _upgrade_kubectl(argv: list[str]) -> int:
    state = load()
    node = state["node"]
    if argv[:1] == ["version"]:
        record("kubectl", argv, False)
        if state.get("api_down"):  # as kubectl prints it: the client's version, then the error, exit 1
            out(json.dumps({"clientVersion": {"gitVersion": "v1.32.4"}}, indent=2) + "\n")
            sys.stderr.write("The connection to the server 10.0.0.10:6443 was refused - did you specify the right host or port?\n")
            return 1
        out(json.dumps({"serverVersion": {"gitVersion": f"v{state.get('server_version', '1.32.4')}"}}, indent=2) + "\n")
        return 0
    if any("{.spec.unschedulable}" in a for a in argv):
        record("kubectl", argv, False)
        out("true" if node.get("unschedulable") else "")
        return 0
    annotation = next((a for a in argv if a.startswith("jsonpath={.metadata.annotations.")), None)
    if annotation is not None:
        # kubectl get -o jsonpath: a dot in a key is escaped with a backslash (kubernetes#31984); a
        # missing key prints nothing, exit 0 (--allow-missing-template-keys defaults to true)
        record("kubectl", argv, False)
        if state.get("api_down"):
            sys.stderr.write("The connection to the server 10.0.0.10:6443 was refused - did you specify the right host or port?\n")
            return 1
        key = annotation.removeprefix("jsonpath={.metadata.annotations.").removesuffix("}").replace("\\.", ".")
        out(node.get("annotations", {}).get(key, ""))
        return 0
    if argv[:1] == ["annotate"]:
        return _annotate(argv, state)
    if argv[:1] in (["cordon"], ["uncordon"], ["drain"]):
        record("kubectl", argv, True)
        if argv[0] == "drain" and state.get("drain_fails"):
            sys.stderr.write("error: timed out waiting for the condition (Cannot evict pod as it would violate the pod's disruption budget)\n")
            return 1
        node["unschedulable"] = argv[0] != "uncordon"
        if argv[0] == "drain":
            node["drained"] = True
        save(state)
        return 0
    return _base_kubectl(argv)


def _annotate(argv: list[str], state: dict) -> int:
    """kubectl annotate [--overwrite] node NAME KEY=VALUE... KEY-... as kubectl 1.32.4 does it
    (kubernetes/kubectl kubernetes-1.32.4 pkg/cmd/annotate/annotate.go): without --overwrite a key
    that has another value is refused (validateNoAnnotationOverwrites); removing a key that is
    not there is no error (updateAnnotations deletes from the map)."""
    record("kubectl", argv, True)
    if state.get("api_down"):
        sys.stderr.write("The connection to the server 10.0.0.10:6443 was refused - did you specify the right host or port?\n")
        return 1
    args = [a for a in argv[1:] if a != "--overwrite"]
    overwrite = "--overwrite" in argv
    assert args[0] == "node", argv
    annotations = state["node"].setdefault("annotations", {})
    pairs = [a for a in args[2:] if "=" in a]
    removals = [a[:-1] for a in args[2:] if a.endswith("-") and "=" not in a]
    clashes = [f"'{k}' already has a value ({annotations[k]})" for k, v in (p.split("=", 1) for p in pairs)
               if k in annotations and annotations[k] != v]
    if clashes and not overwrite:
        sys.stderr.write("error: --overwrite is false but found the following declared annotation(s): " + "; ".join(clashes) + "\n")
        return 1
    for k, v in (p.split("=", 1) for p in pairs):
        annotations[k] = v
    for k in removals:
        annotations.pop(k, None)
    save(state)
    return 0


def _upgrade_kubeadm(argv: list[str]) -> int:
    if argv[:1] != ["upgrade"]:
        return _base_kubeadm(argv)
    record("kubeadm", argv, True)
    state = load()
    if argv[1] == "apply":
        version = argv[-1]
        manifest = _env.ROOT / "etc/kubernetes/manifests/kube-apiserver.yaml"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(f"spec:\n  containers:\n  - image: registry.k8s.io/kube-apiserver:{version}\n")
        state["server_version"] = version.removeprefix("v")
    save(state)
    return 0


def _upgrade_modinfo(argv: list[str]) -> int:
    record("modinfo", argv, False)
    installed = load().get("driver_installed")
    if not installed:
        return 1
    out(f"{installed}\n")
    return 0


def _upgrade_nvidia_smi(argv: list[str]) -> int:
    state = load()
    if state["driver_loaded"] and argv[:1] == ["--query-gpu=uuid"]:
        record("nvidia-smi", argv, False)
        offset = state.get("uuid_offset", 0)
        out("".join(f"GPU-{i + offset:08d}-0000-0000-0000-000000000000\n" for i in range(state["lspci_gpus"])))
        return 0
    if state["driver_loaded"] and argv == ["-q"] and "q" not in state.get("smi_outputs", {}):  # a real capture wins
        record("nvidia-smi", argv, False)
        fabric = state.get("fabric_state", "Completed")
        out("".join(f"GPU 00000000:{i + 1:02X}:00.0\n    Fabric\n        State                             : {fabric}\n"
                    f"        Status                            : Success\n" for i in range(state["lspci_gpus"])))
        return 0
    return _base_nvidia_smi(argv)


def _upgrade_dnf(argv: list[str]) -> int:
    if argv[:2] == ["versionlock", "delete"]:
        record("dnf", argv, True)
        state = load()
        state["versionlock"] = sorted(set(state["versionlock"]) - set(argv[2:]))
        save(state)
        return 0
    return _base_dnf(argv)


HANDLERS.update({"kubectl": _upgrade_kubectl, "kubeadm": _upgrade_kubeadm, "modinfo": _upgrade_modinfo,
                 "nvidia-smi": _upgrade_nvidia_smi, "dnf": _upgrade_dnf})


# --- issue 27: the burn-in gate's kubectl: apply of its Jobs (recorded), their deletion, their logs ----------
# A Job's conditions come from cluster.jobs["<ns>/<name>"] (as for the smoke test); its log from
# cluster.logs["<name>"] (the real captures of tests/fixtures/burn-in/, between the Job's section markers).

_before_burnin_kubectl = HANDLERS["kubectl"]


def _burnin_kubectl(argv: list[str]) -> int:
    args = list(argv)
    if args[:1] == ["-n"]:
        args = args[2:]
    if args[:1] == ["apply"]:
        record("kubectl", argv, True)
        state = load()
        state.setdefault("applied", []).append(sys.stdin.read())
        save(state)
        return 0
    if args[:1] == ["delete"]:
        record("kubectl", argv, True)
        return 0
    if args[:2] == ["get", "pods"]:  # the gate's "already serving" look: cluster.pods, as that jsonpath prints them
        record("kubectl", argv, False)
        selector = next((a for i, a in enumerate(args) if i and args[i - 1] == "--field-selector"), "")
        node = selector.split("spec.nodeName=", 1)[1].split(",", 1)[0] if "spec.nodeName=" in selector else None
        out("".join(f"{p['namespace']} {json.dumps(p['requests'], separators=(',', ':'))}\n"
                    for p in load().get("cluster", {}).get("pods", []) if p["node"] == node and p.get("phase") == "Running"))
        return 0
    if args[:1] == ["logs"]:
        record("kubectl", argv, False)
        out(load().get("cluster", {}).get("logs", {}).get(args[1].removeprefix("job/"), ""))
        return 0
    return _before_burnin_kubectl(argv)


HANDLERS["kubectl"] = _burnin_kubectl
