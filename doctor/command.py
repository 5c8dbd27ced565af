"""`gpu-stack doctor STACK`: seed 003's ten-minute GPU diagnosis, run against a deployed stack.

    python -m doctor STACK [--vm NAME] [--json] [--evidence DIR] [--outputs FILE]
    make doctor STACK=prod

Reads the stack config (Pulumi.<stack>.yaml) and its outputs (`--outputs FILE`,
the JSON of `pulumi stack output --json --show-secrets`, or the same through
the Automation API), then collects, read-only:
- from each VM over SSH with the stack's key, pinning the host key from the
  `vms.<name>.hostPublicKey` output: nvidia-smi, dmesg, modules, Fabric
  Manager, the runtime config, the kubelet checkpoint, and for drift the
  loaded and installed driver and the installed package versions;
- from the hypervisor (hosts[].libvirtUri, qemu+ssh://user@host/system):
  `virsh dumpxml`, the devices' driver and IOMMU group in sysfs;
- from the cluster through the `kubeconfig` output with the official
  `kubernetes` client: node, pods, DaemonSets, events, RuntimeClasses,
  ServiceMonitors, PrometheusRules, plugin logs, and Prometheus's targets,
  rules and alerts through the API server's service proxy.
The checks are doctor/diagnosis.py. Exit 0 only when nothing FAILs. It never
changes anything: every command is in doctor.diagnosis's allowlist (checked
before it is sent) and every API call is a GET; fixes are printed, not run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import yaml

from doctor.diagnosis import (
    FAIL,
    GUEST_COMMANDS,
    PASS,
    SKIP,
    WARN,
    CommandResult,
    Evidence,
    Expected,
    Result,
    diagnose,
    evidence_files,
    exit_code,
    host_commands,
    drift_packages,
    is_read_only,
    package_command,
    redact,
)
from config.catalog import nvlink_generation
from render.nvidia_packages import fabric_packages
from doctor.nvidia_smi import normalize_pci
from render.helm_values import uses_runtime_class
from render.k8s_manifests import BURNIN_NAMESPACE, RUNTIME_CLASS
from render.mmio import hole64_gib
from stacks.addons import expected_allocatable, gpu_resource
from config.models import StackConfig
from config.errors import ConfigError
from stacks.load import decode_config_value, parse_stack_config
from tools.cli import OneLineParser, UsageError, read_json_object, read_text
from tools.plan import ROOT, load_stack_file, plan_config, stack_config

COMMAND_TIMEOUT_S = 30


class NotReadOnly(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------
# stack config and outputs


def load_config(stack: str, root: Path) -> StackConfig:
    return stack_config(*plan_config(load_stack_file(stack, root)))


def pulumi_outputs(stack: str, root: Path) -> tuple[dict[str, Any], set[str]]:
    """`pulumi stack output --json --show-secrets` through the Automation API: (values, names of secret outputs)."""
    from pulumi import automation as auto

    s = auto.select_stack(stack_name=stack, work_dir=str(root))
    outs = s.outputs()
    return {k: v.value for k, v in outs.items()}, {k for k, v in outs.items() if v.secret}


def pulumi_secret_config(stack: str, root: Path, key: str) -> str | None:
    from pulumi import automation as auto

    try:
        return auto.select_stack(stack_name=stack, work_dir=str(root)).get_config(f"gpu-stack:{key}").value
    except Exception:  # noqa: BLE001 - absent key or no backend: the caller says what is missing
        return None


def _holds_gpus(container: dict, resource: str) -> bool:
    """A container whose limits ask for the GPU resource (any quantity the API accepted, "1" or "1k")."""
    value = ((container.get("resources") or {}).get("limits") or {}).get(resource)
    return value not in (None, "", "0", 0)


WORKLOAD_LOG_LINES = 50
"""The tail of a GPU pod's log that is searched for the no-GPU messages (doctor/diagnosis.py NO_GPU_SIGNATURES)."""


def expected_for(cfg: StackConfig, vm_name: str, outputs: dict[str, Any]) -> Expected:
    vm = next(v for v in cfg.vms if v.name == vm_name)
    inventory = (outputs.get("gpuInventory") or {}).get(vm_name) or {}
    uuids = tuple(g["uuid"] for g in inventory.get("gpus") or [] if g.get("uuid"))
    bus_ids = tuple((g["uuid"], normalize_pci(g["busId"])) for g in inventory.get("gpus") or [] if g.get("uuid") and g.get("busId"))
    alloc_out = (outputs.get("expectedAllocatable") or {}).get(vm_name)
    alloc_cfg = expected_allocatable(cfg).get(vm_name)
    resource = gpu_resource(cfg)
    alloc = (alloc_out or alloc_cfg or {}).get(resource)
    a = cfg.addons
    plugin = namespace = None
    if a.gpu_operator.enabled and a.gpu_operator.device_plugin_enabled:
        plugin, namespace = "operator", a.gpu_operator.namespace
    elif a.device_plugin.enabled:
        plugin = a.device_plugin.deploy
        namespace = a.device_plugin.namespace if a.device_plugin.deploy == "helm" else "kube-system"
    k = cfg.kubernetes
    guest = cfg.guest
    return Expected(
        vm=vm.name,
        gpu_count=len(vm.gpus),
        gpu_uuids=uuids,
        host_addresses=tuple(g.address for g in vm.gpus) + tuple(s.address for s in vm.nvswitches),
        nvswitch=bool(vm.nvswitches),
        driver_version=guest.nvidia.driver_version if guest else None,
        toolkit_version=guest.container_runtime.nvidia_toolkit_version if guest else None,
        runtime=guest.container_runtime.name if guest else None,
        runtime_handler=RUNTIME_CLASS if uses_runtime_class(guest) else None,
        resource=resource,
        allocatable=alloc,
        node_labels=dict(k.node_labels) if k else {},
        node_taints=tuple((t.key, t.value, t.effect) for t in k.node_taints) if k else (),
        plugin=plugin,
        plugin_namespace=namespace or "nvidia-device-plugin",
        monitoring=a.monitoring.enabled,
        monitoring_namespace=a.monitoring.namespace,
        release=a.monitoring.release_name,
        hole64_gib=hole64_gib(vm) or None,
        maxphysaddr="passthrough",
        iommu_groups=_recorded_groups(outputs, vm.name),
        assigned_elsewhere={d.address: f"vms[{i}] ({v.name})" for i, v in enumerate(cfg.vms)
                            if v.name != vm.name and v.host == vm.host for d in (*v.gpus, *v.nvswitches)},
        gpu_bus_ids=bus_ids,
        kubernetes_version=k.version if k and k.mode != "existing" else None,
        fabricmanager_package=fabric_packages(guest.os.family, guest.nvidia.driver_version,
                                              nvlink_generation=nvlink_generation([g.model for g in vm.gpus])).probe
        if guest and vm.nvswitches else None,
        os_family=guest.os.family if guest else "ubuntu",
    )


def _recorded_groups(outputs: dict[str, Any], vm_name: str) -> dict[str, int] | None:
    """vms.<vm>.iommuGroups, the groups the preflight read at the last `pulumi up`; None when not recorded."""
    groups = ((outputs.get("vms") or {}).get(vm_name) or {}).get("iommuGroups")
    return {str(a): int(g) for a, g in groups.items()} if isinstance(groups, dict) else None


# ----------------------------------------------------------------------------------------------------------
# collection: SSH (asyncssh) and the Kubernetes API (official client); read-only by construction


@dataclass
class SshTarget:
    host: str
    port: int
    user: str
    client_keys: list[Any] | None      # asyncssh keys; None: the user's agent and ~/.ssh keys
    known_hosts: Any                   # asyncssh known_hosts argument


async def run_commands(target: SshTarget, commands: dict[str, str], ran: list[str] | None = None) -> dict[str, CommandResult]:
    import asyncssh

    for cmd in commands.values():
        if not is_read_only(cmd):
            raise NotReadOnly(f"refusing to run a command outside the read-only allowlist: {cmd!r}")
    async with asyncssh.connect(target.host, port=target.port, username=target.user, client_keys=target.client_keys,
                                known_hosts=target.known_hosts, agent_path=None if target.client_keys else (),
                                connect_timeout=COMMAND_TIMEOUT_S) as conn:
        async def one(key: str, cmd: str) -> tuple[str, CommandResult]:
            if ran is not None:
                ran.append(cmd)
            try:
                r = await conn.run(cmd, check=False, timeout=COMMAND_TIMEOUT_S)
            except (asyncssh.TimeoutError, asyncio.TimeoutError):
                return key, CommandResult(cmd, -1, "", f"timed out after {COMMAND_TIMEOUT_S}s")
            return key, CommandResult(cmd, r.exit_status if r.exit_status is not None else -1, str(r.stdout or ""), str(r.stderr or ""))

        done = await asyncio.gather(*(one(k, c) for k, c in commands.items()))
    return dict(done)


def run_sync(coro: Any) -> Any:
    """Run on a private event loop: asyncio.run() would leave the thread without a current loop, which Pulumi's runtime needs."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def guest_commands(x: Expected) -> dict[str, str]:
    keys = ["nvidia-smi-L", "nvidia-smi-q", "modules", "dmesg", "nvidia-ctk", "cdi", "kubelet-checkpoint"]
    if x.nvswitch:
        keys += ["nvidia-smi-topo", "nvidia-smi-nvlink", "fabricmanager"]
    keys.append("containerd-config" if x.runtime == "containerd" else "docker-daemon")
    if x.gpu_count:
        keys += ["driver-loaded", "driver-installed"]
    return {**{k: GUEST_COMMANDS[k] for k in keys}, "packages": package_command(x.os_family, drift_packages(x))}


def run_local(commands: dict[str, str], ran: list[str] | None = None) -> dict[str, CommandResult]:
    """The hypervisor is this machine (libvirtUri qemu:///system)."""
    out = {}
    for key, cmd in commands.items():
        if not is_read_only(cmd):
            raise NotReadOnly(f"refusing to run a command outside the read-only allowlist: {cmd!r}")
        if ran is not None:
            ran.append(cmd)
        p = subprocess.run(cmd.split(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
        out[key] = CommandResult(cmd, p.returncode, p.stdout, p.stderr)
    return out


class ClusterReader:
    """GETs through the official client; JSON kept as the API server sent it."""

    def __init__(self, kubeconfig: str):
        from kubernetes import client, config

        self.client = client
        self.api = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
        self.core = client.CoreV1Api(self.api)

    @staticmethod
    def _json(resp: Any) -> Any:
        return json.loads(resp.data)

    def collect(self, x: Expected, ev: Evidence) -> None:
        c = self.client

        def get(key: str, call: Callable[[], Any], pick: Callable[[Any], Any] = lambda d: d.get("items", [])) -> None:
            try:
                ev.k8s[key] = pick(self._json(call()))
            except c.exceptions.ApiException as e:
                ev.errors[key] = f"HTTP {e.status} {e.reason}"
            except Exception as e:  # noqa: BLE001 - unreachable API server: reported as evidence, not a traceback
                ev.errors[key] = f"{type(e).__name__}: {e}"

        get("node", lambda: self.core.read_node(x.vm, _preload_content=False), lambda d: d)
        get("pods", lambda: self.core.list_pod_for_all_namespaces(_preload_content=False))
        get("daemonsets", lambda: c.AppsV1Api(self.api).list_daemon_set_for_all_namespaces(_preload_content=False))
        get("events", lambda: self.core.list_event_for_all_namespaces(_preload_content=False))
        get("runtimeclasses", lambda: c.NodeV1Api(self.api).list_runtime_class(_preload_content=False))
        custom = c.CustomObjectsApi(self.api)
        if x.monitoring:
            get("servicemonitors", lambda: custom.list_cluster_custom_object("monitoring.coreos.com", "v1", "servicemonitors", _preload_content=False))
            get("prometheusrules", lambda: custom.list_cluster_custom_object("monitoring.coreos.com", "v1", "prometheusrules", _preload_content=False))
            service = f"{x.release}-prometheus:http-web"
            for what in ("targets", "rules", "alerts"):
                # The path is given whole: the generated connect_get_namespaced_service_proxy_with_path() encodes its
                # `/` as %2F, which the API server passes on and Prometheus answers with 404.
                path = f"/api/v1/namespaces/{quote(x.monitoring_namespace)}/services/{quote(service, safe=':')}/proxy/api/v1/{what}"
                try:
                    method, url, headers, _, _ = self.api.param_serialize("GET", path, auth_settings=["BearerToken"])
                    resp = self.api.call_api(method, url, header_params=headers)
                    resp.read()
                    if resp.status != 200:
                        raise c.exceptions.ApiException(status=resp.status, reason=resp.reason)
                    ev.prometheus[what] = self._json(resp)
                except Exception as e:  # noqa: BLE001
                    ev.errors["prometheus"] = f"{x.monitoring_namespace}/{service} {what}: {getattr(e, 'status', '')} {getattr(e, 'reason', e)}".strip()
        for pod in ev.k8s.get("pods") or []:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            gpu_containers = [c["name"] for c in spec.get("containers") or [] if _holds_gpus(c, x.resource)]
            burn_in = meta.get("namespace") == BURNIN_NAMESPACE  # issue 27: its output goes to the evidence bundle, passed or not
            if gpu_containers and spec.get("nodeName") == x.vm and ((pod.get("status") or {}).get("phase") in ("Running", "Failed") or burn_in):
                # seed 003's "Running but no GPU": what the workload itself printed (read, never exec)
                key = f"{meta.get('namespace')}/{meta['name']}"
                try:
                    resp = self.core.read_namespaced_pod_log(meta["name"], meta["namespace"], container=gpu_containers[0],
                                                             tail_lines=WORKLOAD_LOG_LINES, _preload_content=False)
                    ev.pod_logs[key] = resp.data.decode(errors="replace")
                except Exception as e:  # noqa: BLE001 - a log the API cannot give is no verdict either way
                    ev.errors[f"log {key}"] = str(getattr(e, "reason", e))
            if (meta.get("namespace") == x.plugin_namespace and "device-plugin" in meta["name"]
                    and (pod.get("spec") or {}).get("nodeName") == x.vm and (pod.get("status") or {}).get("phase") == "Running"):
                containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
                # the operator's plugin pod also runs a config-manager sidecar: ask for the plugin's own container
                container = next((n for n in containers if "device-plugin" in n), containers[0] if containers else None)
                try:
                    resp = self.core.read_namespaced_pod_log(meta["name"], meta["namespace"], container=container, tail_lines=200,
                                                             _preload_content=False)
                    ev.plugin_logs[meta["name"]] = resp.data.decode()
                except Exception as e:  # noqa: BLE001
                    ev.errors[f"log {meta['name']}"] = str(getattr(e, "reason", e))


# ----------------------------------------------------------------------------------------------------------
# output


COLOURS = {PASS: "\x1b[32m", WARN: "\x1b[33m", FAIL: "\x1b[31m", SKIP: "\x1b[2m"}


def render_table(vm: str, results: list[Result], colour: bool) -> str:
    lines = [f"gpu-stack doctor: {vm}"]
    section = None
    for r in results:
        if r.section != section:
            section = r.section
            lines.append(f"\n  {section}")
        status = f"{COLOURS[r.status]}{r.status}\x1b[0m" if colour else r.status
        lines.append(f"    {status:<4}  {r.check}: {r.evidence}")
        if r.fix and r.status != PASS:
            lines.append(f"          fix: {r.fix}")
    counts = {s: sum(1 for r in results if r.status == s) for s in (PASS, WARN, FAIL, SKIP)}
    lines.append("\n  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines) + "\n"


def write_evidence(directory: Path, stack: str, vm: str, files: dict[str, str], secrets: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"gpu-stack-doctor-{stack}-{vm}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in sorted(files.items()):
            data = redact(text, secrets).encode()
            info = tarfile.TarInfo(f"{stack}-{vm}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return path


def _flatten(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _flatten(v)]
    if isinstance(value, list):
        return [s for v in value for s in _flatten(v)]
    return [value] if isinstance(value, str) else []


def _secret_values(outputs: dict[str, Any], secret_names: set[str], ssh_key: str | None) -> list[str]:
    values = [ssh_key or ""]
    for name in secret_names:
        values += _flatten(outputs.get(name))
    kube = outputs.get("kubeconfig")
    if isinstance(kube, str):
        try:
            doc = yaml.safe_load(kube) or {}
        except yaml.YAMLError:
            doc = {}
        for user in doc.get("users") or []:
            values += _flatten(user.get("user"))
    return [v for v in values if v]


# ----------------------------------------------------------------------------------------------------------
# main


def _known_hosts_for(public_key: str | None) -> Any:
    import asyncssh

    if not public_key:
        return ()  # no pinned key: refuse rather than trust on first use
    return ([asyncssh.import_public_key(public_key.strip())], [], [])


def doctor_vm(cfg: StackConfig, x: Expected, outputs: dict[str, Any], args: argparse.Namespace, ssh_key: str | None,
              ran: list[str]) -> tuple[Evidence, list[Result]]:
    import asyncssh

    ev = Evidence()
    vm = next(v for v in cfg.vms if v.name == x.vm)
    vm_out = (outputs.get("vms") or {}).get(x.vm) or {}
    ip = vm_out.get("ip") or vm.network.address
    if cfg.guest is None:
        ev.errors["guest"] = "no guest config: nothing to reach over SSH"
    elif not ip:
        ev.errors["guest"] = f"no IP for {x.vm} in the outputs (vms.{x.vm}.ip)"
    elif not ssh_key:
        ev.errors["guest"] = "no SSH key: pass --ssh-key or set gpu-stack:sshPrivateKey"
    elif not vm_out.get("hostPublicKey"):
        ev.errors["guest"] = f"no pinned host key (vms.{x.vm}.hostPublicKey) in the outputs"
    else:
        try:
            target = SshTarget(ip, args.ssh_port, cfg.guest.ssh_user, [asyncssh.import_private_key(ssh_key)],
                               _known_hosts_for(vm_out["hostPublicKey"]))
            ev.guest = run_sync(run_commands(target, guest_commands(x), ran))
        except NotReadOnly:
            raise
        except (OSError, asyncssh.Error, ValueError) as e:  # unreachable, refused, untrusted host key, unreadable key
            ev.errors["guest"] = f"ssh {cfg.guest.ssh_user}@{ip}:{args.ssh_port}: {e}"
    host = next(h for h in cfg.hosts if h.name == vm.host)
    uri = urlsplit(host.libvirt_uri)
    commands = host_commands(x.vm, x.host_addresses)
    if args.no_host:
        ev.errors["host-skipped"] = "--no-host"
    elif uri.scheme == "qemu+ssh":
        # the pinned hosts[].hostKey, as the libvirt provider checks it (hypervisors/libvirt/connection.py)
        known = args.host_known_hosts or (_known_hosts_for(host.host_key) if host.host_key else os.path.expanduser("~/.ssh/known_hosts"))
        target = SshTarget(uri.hostname or "", args.host_ssh_port, uri.username or "root", None, known)
        try:
            # the key the libvirt provider uses (stacks/compose.hypervisor_ssh_key), unless --host-ssh-key names one
            host_key = Path(args.host_ssh_key).read_text() if args.host_ssh_key else getattr(args, "hypervisor_key_text", None)
            target.client_keys = [asyncssh.import_private_key(host_key)] if host_key else None
            ev.host = run_sync(run_commands(target, commands, ran))
        except NotReadOnly:
            raise
        except (OSError, asyncssh.Error, ValueError) as e:
            ev.errors["host"] = f"ssh {target.user}@{target.host}:{target.port}: {e}"
    elif uri.scheme == "qemu" and not uri.hostname:
        ev.host = run_local(commands, ran)
    else:
        ev.errors["host-skipped"] = f"libvirtUri {host.libvirt_uri}: only qemu+ssh:// and local qemu:/// are read"
    kubeconfig = outputs.get("kubeconfig") or args.kubeconfig_text
    if cfg.kubernetes is None:
        ev.errors["node"] = "no kubernetes config in the stack"
    elif not kubeconfig:
        ev.errors["node"] = "no kubeconfig output (and no --kubeconfig)"
    else:
        ClusterReader(kubeconfig).collect(x, ev)
    results = diagnose(x, ev)
    if cfg.kubernetes is None:
        results = [r for r in results if r.section not in ("kubernetes", "workloads", "monitoring")]
    return ev, results


SAVE_OUTPUTS = "`pulumi stack output --json --show-secrets > FILE`"


def _outputs(args: argparse.Namespace, root: Path) -> tuple[dict[str, Any], set[str]]:
    """The stack's outputs (--outputs FILE, else the Automation API); UsageError saying what is missing."""
    if args.outputs:
        return read_json_object(args.outputs, "--outputs", f"the stack's outputs as one JSON object ({SAVE_OUTPUTS})"), {"kubeconfig"}
    if shutil.which("pulumi") is None:
        raise UsageError("the Pulumi CLI is not on PATH, so the stack's outputs cannot be read: install it (README, Versions; "
                         f"`make engine` builds one), or pass --outputs FILE ({SAVE_OUTPUTS} where the CLI is)")
    try:
        outputs, secret_names = pulumi_outputs(args.stack, root)
    except Exception as e:  # noqa: BLE001 - no backend login, no such stack: say so, no traceback
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise UsageError(f"cannot read the outputs of stack {args.stack} ({type(e).__name__}: {last}); "
                         f"log in to the backend, or pass --outputs FILE ({SAVE_OUTPUTS})") from None
    if not outputs:
        raise UsageError(f"stack {args.stack} has no outputs: nothing is deployed yet (`pulumi up` first), so there is nothing to diagnose")
    return outputs, secret_names


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="gpu-stack doctor", description=__doc__.splitlines()[0])
    p.add_argument("stack")
    p.add_argument("--vm", help="one VM (default: every VM of the stack)")
    p.add_argument("--json", action="store_true", help="results as JSON")
    p.add_argument("--evidence", metavar="DIR", help="write seed 003 step 7's evidence, secrets redacted, as DIR/gpu-stack-doctor-<stack>-<vm>.tar.gz")
    p.add_argument("--outputs", metavar="FILE", help="saved `pulumi stack output --json --show-secrets` (default: the Automation API)")
    p.add_argument("--stack-dir", default=str(ROOT), help="where Pulumi.<stack>.yaml lives")
    p.add_argument("--ssh-key", metavar="FILE", help="the guests' SSH private key (default: the gpu-stack:sshPrivateKey secret)")
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--host-ssh-key", metavar="FILE", help="key for the hypervisor (default: the gpu-stack:hypervisorSshPrivateKey secret, else the "
                                                          "guests' key, as the libvirt provider; then the agent and ~/.ssh)")
    p.add_argument("--host-ssh-port", type=int, default=22, help="the hypervisor's SSH port (default 22, the only one the libvirt provider can use)")
    p.add_argument("--host-known-hosts", metavar="FILE", help="known_hosts for the hypervisor (default: the stack's hosts[].hostKey, else ~/.ssh/known_hosts)")
    p.add_argument("--no-host", action="store_true", help="skip the hypervisor checks")
    p.add_argument("--kubeconfig", metavar="FILE", help="for kubernetes.mode existing/join, when the stack has no kubeconfig output")
    args = p.parse_args(argv)
    root = Path(args.stack_dir)
    try:
        cfg = load_config(args.stack, root)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    try:
        outputs, secret_names = _outputs(args, root)
        ssh_key = read_text(args.ssh_key, "--ssh-key") if args.ssh_key else pulumi_secret_config(args.stack, root, "sshPrivateKey")
        args.hypervisor_key_text = None if args.host_ssh_key else (pulumi_secret_config(args.stack, root, "hypervisorSshPrivateKey") or ssh_key)
        args.kubeconfig_text = read_text(args.kubeconfig, "--kubeconfig") if args.kubeconfig else None
    except UsageError as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 2
    names = [v.name for v in cfg.vms]
    if args.vm and args.vm not in names:
        print(f"no VM {args.vm!r} in stack {args.stack}; VMs: {', '.join(names)}", file=sys.stderr)
        return 2
    ran: list[str] = []
    report = []
    code = 0
    secrets = _secret_values(outputs, secret_names, ssh_key)
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not args.json
    for name in [args.vm] if args.vm else names:
        x = expected_for(cfg, name, outputs)
        ev, results = doctor_vm(cfg, x, outputs, args, ssh_key, ran)
        code = max(code, exit_code(results))
        report.append({"vm": name, "results": [r.as_dict() for r in results], "exitCode": exit_code(results)})
        if not args.json:
            sys.stdout.write(render_table(name, results, colour))
        if args.evidence:
            path = write_evidence(Path(args.evidence), args.stack, name, evidence_files(x, ev, results), secrets)
            if not args.json:
                print(f"  evidence: {path}")
    if args.json:
        print(json.dumps({"stack": args.stack, "vms": report, "exitCode": code}, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
