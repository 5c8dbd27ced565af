"""`make preview STACK=<name>`: a real `pulumi preview` of a stack, with the engine from `make engine`.

The real Pulumi CLI (built from its Go module, scripts/build-engine.sh) runs the program; no mock
monitor is involved. Everything it writes stays in a temporary directory:
- a local file backend (`file://<tmp>/state`) and PULUMI_HOME, so nothing reaches ~/.pulumi;
- the passphrase secrets provider with a fixed test passphrase (TEST_PASSPHRASE);
- the stack's own Pulumi.<stack>.yaml config, less its `secure:` values (they are encrypted for
  another passphrase), which are set again as secrets with placeholder values, as are the
  required secrets that the file leaves out;
- no update check and no plugin download: every plugin must come from the engine's bin dir.

The program runs as an automation-API inline program: pulumi's own in-process language server
(the pinned Python package), which the CLI reaches through `--client`. The Go language host
(pulumi-language-python) is not needed that way; engine/engine.toml says why it is not built.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-engine.sh"
MANIFEST = ROOT / "engine" / "engine.toml"
PROJECT = "gpu-stack"
TEST_PASSPHRASE = "gpu-stack-engine-test-passphrase"
"""Encrypts the throwaway stacks' secrets; never used for a real stack."""


def manifest() -> dict[str, Any]:
    with MANIFEST.open("rb") as f:
        return tomllib.load(f)


def engine_bin() -> Path | None:
    """The complete engine bin dir from `make engine`, or None when it has not been built."""
    env_bin = os.environ.get("GPU_STACK_ENGINE_BIN")
    if env_bin:
        path = Path(env_bin)
        return path if (path / "pulumi").is_file() else None
    if shutil.which("bash") is None:
        return None
    done = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, check=False)
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def missing_plugins(bin_dir: Path) -> list[dict[str, Any]]:
    """The manifest's [[blocked]] provider plugins that are neither in bin_dir nor on PATH."""
    return [
        entry for entry in manifest().get("blocked", [])
        if entry["name"].startswith("pulumi-resource-")
        and not (bin_dir / entry["name"]).is_file() and shutil.which(entry["name"]) is None
    ]


def _program() -> None:
    """The project's own entry point, __main__.py, as the language host would run it."""
    runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


def stack_settings(stack: str, root: Path = ROOT) -> tuple[dict[str, Any], list[str]]:
    """Pulumi.<stack>.yaml's config without its `secure:` values, and the secret keys to set again."""
    from config.models import SECRET_KEYS
    from tools.plan import load_stack_file, plan_config

    config = load_stack_file(stack, root)
    _, secret_keys = plan_config(config)  # `secure:` values and absent required secrets
    plain = {k: v for k, v in config.items() if not (isinstance(v, dict) and set(v) == {"secure"})}
    keys = sorted({k.split(":", 1)[1] for k in secret_keys} | {k for k in SECRET_KEYS if f"{PROJECT}:{k}" in config})
    return plain, keys


def with_libvirt_uri(config: dict[str, Any], uri: str) -> dict[str, Any]:
    """`make preview LIBVIRT_URI=...`: every libvirt host of the stack pointed at `uri` (this machine's
    libvirtd, for tests), its hostKey dropped unless `uri` is qemu+ssh. The libvirt provider connects
    to every hosts[].libvirtUri when it is configured, so a real preview needs one that answers."""
    from hypervisors.libvirt.connection import pointed_at

    key = f"{PROJECT}:hosts"
    hosts = config.get(key)
    if not isinstance(hosts, list):
        return config
    return {**config, key: [pointed_at(host, uri) for host in hosts]}


def throwaway_env(tmp: Path) -> dict[str, str]:
    """The CLI's environment for a throwaway stack under `tmp`: a local file backend (tmp/state), its own PULUMI_HOME
    (tmp/home), the test passphrase, no update check and no plugin download."""
    return {
        "PULUMI_BACKEND_URL": f"file://{tmp / 'state'}",
        "PULUMI_HOME": str(tmp / "home"),
        "PULUMI_CONFIG_PASSPHRASE": TEST_PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }


def placeholder_secret(key: str) -> str:
    return f"engine-placeholder-{key}"


@dataclass
class Workspace:
    stack: Any  # pulumi.automation.Stack
    tmp: Path
    env: dict[str, str]
    bin_dir: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the engine's own `pulumi` in this workspace (e.g. `stack export`)."""
        return subprocess.run(
            [str(self.bin_dir / "pulumi"), *args, "--stack", self.stack.name, "--non-interactive"],
            cwd=self.stack.workspace.work_dir, env={**os.environ, **self.env},
            capture_output=True, text=True, check=check,
        )


@contextmanager
def workspace(
    stack: str,
    bin_dir: Path,
    *,
    secrets: dict[str, str] | None = None,
    config_overrides: dict[str, Any] | None = None,
    libvirt_uri: str | None = None,
    host_facts: list[str] | None = None,
    keep: bool = False,
    settings: tuple[dict[str, Any], list[str]] | None = None,
) -> Iterator[Workspace]:
    """A throwaway stack `stack` with its own config in a temporary local backend.

    `settings`: (config, secret keys) to use instead of Pulumi.<stack>.yaml's, for a stack that has no
    file (tests/k8s/test_engine_kubernetes.py's Kubernetes-only stack); its secrets come from `secrets`.

    `host_facts`: facts files (scripts/host-facts.sh format) for the program, in GPU_STACK_HOST_FACTS
    while the workspace is open (the inline program runs in this process and reads os.environ).
    """
    from pulumi import automation as auto
    from facts.host_facts import ENV as HOST_FACTS_ENV

    tmp = Path(tempfile.mkdtemp(prefix=f"gpu-stack-engine-{stack}-"))
    saved_facts = os.environ.pop(HOST_FACTS_ENV, None)
    if host_facts:
        os.environ[HOST_FACTS_ENV] = os.pathsep.join(str(p) for p in host_facts)
    try:
        (tmp / "state").mkdir()
        (tmp / "home").mkdir()
        project_dir = tmp / "project"
        project_dir.mkdir()
        env = {
            **throwaway_env(tmp),
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        plain, secret_keys = settings if settings is not None else stack_settings(stack)
        if libvirt_uri:
            plain = with_libvirt_uri(plain, libvirt_uri)
        plain.update(config_overrides or {})
        opts = auto.LocalWorkspaceOptions(
            work_dir=str(project_dir),
            pulumi_command=auto.PulumiCommand(root=str(bin_dir.parent)),
            env_vars=env,
            secrets_provider="passphrase",
            project_settings=auto.ProjectSettings(name=PROJECT, runtime="python"),
        )
        st = auto.create_stack(stack, project_name=PROJECT, program=_program, opts=opts)
        # `stack init` wrote Pulumi.<stack>.yaml with this passphrase's salt: add the stack's config to it
        settings_file = project_dir / f"Pulumi.{stack}.yaml"
        settings = yaml.safe_load(settings_file.read_text()) if settings_file.exists() else {}
        settings = settings or {}
        settings["config"] = plain
        settings_file.write_text(yaml.safe_dump(settings, sort_keys=True))
        values = {**{k: placeholder_secret(k) for k in secret_keys}, **(secrets or {})}
        for key, value in sorted(values.items()):
            st.set_config(f"{PROJECT}:{key}", auto.ConfigValue(value=value, secret=True))
        yield Workspace(st, tmp, env, bin_dir)
    finally:
        # the inline program ran in this process: remove the hypervisor keys it wrote now, since
        # main() ends with os._exit and isolated() terminates its worker, so no atexit handler runs
        from hypervisors.libvirt.connection import remove_written

        remove_written()
        os.environ.pop(HOST_FACTS_ENV, None)
        if saved_facts is not None:
            os.environ[HOST_FACTS_ENV] = saved_facts
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Outcome:
    """What one engine operation showed; plain data, so it crosses a process boundary."""
    ok: bool
    stdout: str
    error: str  # the CLI's stderr when it failed
    registered: list[str]  # resource types, in the order the engine registered them
    diagnostics: list[tuple[str, str]]  # (severity, message)


def isolated(fn, *args: Any, timeout: float = 600, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) in a fresh Python process, which is then killed.

    When the engine stops mid-program (e.g. at a provider plugin it cannot load), the inline
    program's thread stays blocked on an output that never resolves, spinning in pulumi's
    sync-await loop, and the interpreter can never exit (it joins that thread). A process of its
    own per operation, terminated afterwards, keeps that from reaching the caller (pytest).
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:  # leaving the block terminates the worker, stuck threads and all
        return pool.apply_async(fn, args, kwargs).get(timeout)


def _preview(stack: str, as_json: bool, libvirt_uri: str | None = None, host_facts: list[str] | None = None) -> int:
    from pulumi import automation as auto

    bin_dir = engine_bin()
    if bin_dir is None:
        print("engine: not built; run `make engine` (scripts/build-engine.sh)", file=sys.stderr)
        return 2
    missing = missing_plugins(bin_dir)
    if missing:
        print("engine: these provider plugins cannot be built here (engine/engine.toml, [[blocked]]), "
              "so the real engine will stop at the first resource that needs one:", file=sys.stderr)
        for entry in missing:
            print(f"  {entry['name']} {entry['wants']} ({entry['module']})", file=sys.stderr)
    with workspace(stack, bin_dir, libvirt_uri=libvirt_uri, host_facts=host_facts) as ws:
        try:
            result = ws.stack.preview(diff=not as_json, json=as_json, color="never", on_output=print)
        except auto.errors.CommandError as e:
            # the CLI's stdout was shown as it came; its stderr says why it stopped
            print(str(e).rsplit(" stderr: ", 1)[-1].rstrip(), file=sys.stderr)
            return 1
    if not as_json:
        print(f"preview {stack}: {dict(sorted(result.change_summary.items()))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preview", help="a real `pulumi preview` of STACK")
    p.add_argument("stack")
    p.add_argument("--json", action="store_true", help="Pulumi's --json output instead of the diff")
    p.add_argument("--libvirt-uri", metavar="URI", help="point every libvirt host at this URI, e.g. qemu:///system (tests)")
    p.add_argument("--facts", action="append", default=[], metavar="FILE",
                   help="host facts file (scripts/host-facts.sh), one per host; the program reads them instead of asking libvirtd")
    sub.add_parser("bin", help="print the engine's bin dir (exit 1 if not built)")
    args = parser.parse_args(argv)
    if args.cmd == "bin":
        bin_dir = engine_bin()
        if bin_dir is None:
            return 1
        print(bin_dir)
        return 0
    rc = _preview(args.stack, args.json, args.libvirt_uri, args.facts or [f for f in os.environ.get("GPU_STACK_HOST_FACTS", "").split(os.pathsep) if f])
    # os._exit, not sys.exit: a program the engine abandoned may leave a thread that never ends (see isolated())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
