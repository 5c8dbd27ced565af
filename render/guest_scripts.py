"""Guest setup phases: which scripts run on a VM, with what parameters, in what order.

Each phase is a static, shellcheck-clean file under scripts/guest/, inlined
after scripts/guest/lib.sh and a rendered `export` header holding only that
phase's parameters, so a config change re-renders (and re-runs) only the
phases that read it. Secrets (join token, registry password) never enter the
script: the command feeds them on stdin. `triggers` carry the hash of the
phase and of the phases whose result it checks, so an unchanged config
re-runs nothing and a changed one re-runs the affected phase and its
dependents.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from stacks.config import Guest, Kubernetes, Vm

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "guest"
HEREDOC = "GPU_STACK_SCRIPT_EOF"
DOCKER_REPOSITORY = "https://download.docker.com/linux"
"""Docker's package repositories (docker-ce; containerd.io on EL): <this>/ubuntu, <this>/rhel, <this>/centos."""

# phase -> phases whose outcome it depends on (beyond running after them)
LOGICAL_DEPS: dict[str, tuple[str, ...]] = {
    "nouveau-check": ("nouveau",),
    "kubeconfig": ("kubernetes",),
    "verify": ("driver", "cuda", "container-runtime", "kubernetes"),
}


@dataclass(frozen=True)
class Phase:
    name: str
    params: dict[str, str]
    stdin_secret: str | None = None  # config secret fed on stdin
    secret_stdout: bool = False
    long_running: bool = False
    waits_for_boot: bool = False  # first contact, or contact after a reboot
    late_params: tuple[str, ...] = field(default=())  # params only known at deploy time (Outputs)


def render_script(phase: str, params: dict[str, str]) -> str:
    """The bash text of one phase: header, lib.sh, then the phase body."""
    values = {**params, "GS_PHASE": phase}
    header = [
        "#!/usr/bin/env bash",
        f"# gpu-stack guest phase '{phase}': scripts/guest/{phase}.sh with its parameters (render/guest_scripts.py)",
        "set -euo pipefail",
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(values.items())),
    ]
    return "\n".join(header) + "\n\n" + _source("lib") + "\n" + _source(phase)


@functools.cache
def _source(name: str) -> str:
    """scripts/guest/<name>.sh, read once per process: every VM's phases inline the same files."""
    return (SCRIPTS / f"{name}.sh").read_text()


def ssh_command(script: str) -> str:
    """Run `script` as root from a temp file on the guest; stdin stays free for secrets."""
    if HEREDOC in script:
        raise ValueError("script contains the heredoc delimiter")
    return (
        "set -e\n"
        'f=$(mktemp)\n'
        f"cat > \"$f\" <<'{HEREDOC}'\n{script}{HEREDOC}\n"
        'if [ "$(id -u)" = 0 ]; then run=""; else run="sudo -n"; fi\n'
        'set +e\n$run bash "$f"\nrc=$?\nrm -f "$f"\nexit $rc\n'
    )


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def triggers(phase: str, scripts: dict[str, str]) -> list[str]:
    """Hashes of this phase and of the phases whose outcome it checks."""
    deps = [d for d in LOGICAL_DEPS.get(phase, ()) if d in scripts]
    return [f"{phase}:{digest(scripts[phase])}", *(f"{d}:{digest(scripts[d])}" for d in deps)]


def _proxy(guest: Guest) -> dict[str, str]:
    p = guest.proxy
    return {
        "GS_HTTP_PROXY": (p.http or "") if p else "",
        "GS_HTTPS_PROXY": (p.https or "") if p else "",
    }


def guest_phases(vm: Vm, guest: Guest, kubernetes: Kubernetes | None, role: str) -> list[Phase]:
    """Ordered phases for one VM. role: init, join or none (existing cluster / no Kubernetes).

    A join to `kubernetes.join` takes endpoint and CA hash from config; a join to
    this stack's own init VM gets them at deploy time (late_params).
    """
    proxy = _proxy(guest)
    no_proxy = ",".join(guest.proxy.no_proxy) if guest.proxy else ""
    nv = guest.nvidia
    counts = {"GS_GPU_COUNT": str(len(vm.gpus)), "GS_NVSWITCH_COUNT": str(len(vm.nvswitches))}
    phases = [
        Phase("wait-ssh", {}, waits_for_boot=True),
        Phase("preflight", {
            "GS_OS_FAMILY": guest.os.family, "GS_OS_VERSION": guest.os.version,
            "GS_MIN_ROOT_FREE_GIB": str(guest.min_root_free_gib), "GS_DRIVER_METHOD": nv.install_method, **counts,
        }),
        Phase("os-prep", {
            "GS_HOSTNAME": vm.name, "GS_SELINUX": guest.selinux,
            "GS_DISABLE_FIREWALLD": "1" if guest.disable_firewalld else "0", **proxy,
        }),
        Phase("nouveau", {}),
        Phase("nouveau-check", {}, waits_for_boot=True),
        Phase("driver", {
            "GS_DRIVER_VERSION": nv.driver_version, "GS_DRIVER_METHOD": nv.install_method,
            "GS_DRIVER_RUNFILE_URL": nv.runfile_url or "", "GS_NVSWITCH_COUNT": counts["GS_NVSWITCH_COUNT"], **proxy,
        }, long_running=True),
    ]
    if nv.cuda is not None:
        phases.append(Phase("cuda", {"GS_CUDA_VERSION": nv.cuda.version, "GS_CUDA_RUNFILE_URL": nv.cuda.runfile_url, **proxy}, long_running=True))
    rt = guest.container_runtime
    phases.append(Phase("container-runtime", {
        "GS_RUNTIME": rt.name, "GS_TOOLKIT_VERSION": rt.nvidia_toolkit_version,
        "GS_NVIDIA_DEFAULT": "1" if rt.nvidia_default else "0",
        "GS_REGISTRY_MIRRORS": " ".join(f"{m.registry}={m.endpoint}" for m in guest.registry_mirrors),
        "GS_REGISTRY_USER": guest.registry_username or "", "GS_NO_PROXY": no_proxy, **proxy,
        "GS_DOCKER_REPO": rt.docker_repository or DOCKER_REPOSITORY,
    }, stdin_secret="registryPassword" if guest.registry_username else None))
    if kubernetes is not None and role in ("init", "join"):
        minor = ".".join(kubernetes.version.split(".")[:2])
        params = {
            "GS_K8S_VERSION": kubernetes.version, "GS_K8S_ROLE": role, "GS_POD_CIDR": kubernetes.pod_cidr,
            "GS_NODE_NAME": vm.name, "GS_RUNTIME": rt.name,
            "GS_K8S_REPO": kubernetes.package_repository or f"https://pkgs.k8s.io/core:/stable:/v{minor}",
            "GS_NODE_LABELS": " ".join(f"{k}={v}" for k, v in sorted(kubernetes.node_labels.items())),
            "GS_NODE_TAINTS": " ".join(f"{t.key}={t.value}:{t.effect}" for t in kubernetes.node_taints),
            "GS_HTTPS_PROXY": proxy["GS_HTTPS_PROXY"],
            "GS_K8S_ENDPOINT": "", "GS_K8S_CA_HASH": "",
        }
        late: tuple[str, ...] = ()
        if role == "join" and kubernetes.join is not None:
            params["GS_K8S_ENDPOINT"] = kubernetes.join.control_plane_endpoint
            params["GS_K8S_CA_HASH"] = kubernetes.join.ca_cert_hash
        elif role == "join":
            late = ("GS_K8S_ENDPOINT", "GS_K8S_CA_HASH")
        phases.append(Phase("kubernetes", params, stdin_secret="joinToken", long_running=True, late_params=late))
        if role == "init":
            phases.append(Phase("kubeconfig", {}, secret_stdout=True))
    phases.append(Phase("verify", {**counts, "GS_RUNTIME": rt.name}))
    return phases


def teardown_script(vm: Vm) -> str:
    return render_script("kubernetes-teardown", {"GS_NODE_NAME": vm.name})


GATE_TIMEOUT_S = 1200
"""All readiness waits together; within the command's 45-minute timeout."""


def readiness_phase(expected: dict[str, dict[str, int]], resource: str, plugin_logs: str,
                    smoke_job: tuple[str, str] | None, kubeconfig_on_stdin: bool) -> Phase:
    """The gate after the add-ons: nodes Ready, GPU allocatable as configured, smoke-test Job succeeded.

    expected: node -> {resource: count} (stacks.addons.expected_allocatable). Runs on the first
    VM with the admin kubeconfig (mode init) or the gpu-stack:kubeconfig secret on stdin (mode join).
    """
    return Phase("readiness", {
        "GS_GATE_NODES": " ".join(f"{node}={counts[resource]}" for node, counts in sorted(expected.items())),
        "GS_GPU_RESOURCE": resource,
        "GS_PLUGIN_LOGS": plugin_logs,
        "GS_SMOKE_NAMESPACE": smoke_job[0] if smoke_job else "",
        "GS_SMOKE_JOB": smoke_job[1] if smoke_job else "",
        "GS_GATE_TIMEOUT": str(GATE_TIMEOUT_S),
        "GS_GATE_INTERVAL": "5",
        "GS_KUBECONFIG_STDIN": "1" if kubeconfig_on_stdin else "0",
    }, stdin_secret="kubeconfig" if kubeconfig_on_stdin else None, long_running=True)
