"""A fake guest for running the rendered phase scripts for real.

A temp root ($GS_ROOT) with the files a fresh Ubuntu 24.04 or Rocky 9 cloud
image has, the stubs of tests/support/guest_stubs.py first on PATH, and the
script sent exactly as the remote command sends it (render/guest_scripts.ssh_command).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from render.guest_scripts import Phase, render_script, ssh_command
from tests.support import guest_stubs

OS_RELEASE = {
    "ubuntu": 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n',
    "rhel": 'NAME="Rocky Linux"\nVERSION_ID="9.4"\nID="rocky"\nID_LIKE="rhel centos fedora"\n',
}


def fresh_state(family: str, **overrides) -> dict:
    state = {
        "family": family,
        "packages": {"openssh-server": "1.0"},
        "held": [],
        "versionlock": [],
        "modules": ["nouveau", "drm"],
        "units": {"firewalld": {"enabled": True, "active": True}} if family == "rhel" else {},
        "swap": True,
        "hostname": "localhost",
        "selinux": "Enforcing",
        "secure_boot": False,
        "lspci_gpus": 1,
        "lspci_nvswitches": 0,
        "df_avail_kib": 180 * 1024 * 1024,
        "nouveau_in_use": False,
        "driver_installed": None,
        "driver_loaded": None,
        "persistence": False,
        "reboot_scheduled": False,
        "tokens": [],
        "node": {"labels": {}, "taints": []},
    }
    state.update(overrides)
    return state


class GuestSandbox:
    def __init__(self, tmp: Path, family: str, **state):
        self.tmp = tmp
        self.root = tmp / "root"
        self.bin = tmp / "bin"
        self.family = family
        for d in ("etc/modprobe.d", "etc/dnf", "etc/selinux", "var/tmp", "proc"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "etc/os-release").write_text(OS_RELEASE[family])
        (self.root / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n")
        (self.root / "etc/hosts").write_text("127.0.0.1 localhost\n")
        if family == "rhel":
            (self.root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
            (self.root / "etc/dnf/dnf.conf").write_text("[main]\ngpgcheck=1\n")
        (tmp / "state.json").write_text(json.dumps(fresh_state(family, **state)))
        (tmp / "calls.jsonl").write_text("")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=kubernetes", "-keyout", str(tmp / "ca.key"), "-out", str(tmp / "ca.crt"), "-days", "1"],
                       check=True, capture_output=True)
        self.bin.mkdir()
        stub = Path(guest_stubs.__file__)
        for name in guest_stubs.HANDLERS:
            path = self.bin / name
            path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(stub.parent.parent.parent)!r})\n"
                            f"from tests.support.guest_stubs import HANDLERS\nsys.exit(HANDLERS[{name!r}](sys.argv[1:]))\n")
            path.chmod(0o755)

    @property
    def state(self) -> dict:
        return json.loads((self.tmp / "state.json").read_text())

    def set_state(self, **values) -> None:
        state = self.state
        state.update(values)
        (self.tmp / "state.json").write_text(json.dumps(state))

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in (self.tmp / "calls.jsonl").read_text().splitlines()]

    def clear_calls(self) -> None:
        (self.tmp / "calls.jsonl").write_text("")

    def mutating(self) -> list[str]:
        return [" ".join([c["cmd"], *c["argv"]]) for c in self.calls() if c["mutating"]]

    def tree(self) -> dict[str, str]:
        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.rglob("*")) if p.is_file()}

    def run(self, phase: Phase, stdin: str = "", params: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        script = render_script(phase.name, params if params is not None else phase.params)
        env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "GS_ROOT": str(self.root),
            "GS_SANDBOX": str(self.tmp),
            "HOME": str(self.tmp),
            "LANG": "C.UTF-8",
            "GS_POLL_SECONDS": "0",  # lib.sh's wait loops poll without sleeping here
        }
        return subprocess.run(["/bin/sh", "-c", ssh_command(script)], input=stdin, capture_output=True, text=True,
                              env=env, cwd=self.tmp, timeout=timeout)

