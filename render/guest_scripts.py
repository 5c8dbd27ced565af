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
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from config.catalog import GPU_MODELS, default_kernel_modules, nvlink_generation
from render.nvidia_packages import fabric_packages
from config.models import Fleet, Guest, Kubernetes, Vm

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "guest"
HEREDOC = "GPU_STACK_SCRIPT_EOF"
DOCKER_REPOSITORY = "https://download.docker.com/linux"
"""Docker's package repositories (docker-ce; containerd.io on EL): <this>/ubuntu, <this>/rhel, <this>/centos."""
NVIDIA_CONTAINER_TOOLKIT_REPOSITORY = "https://nvidia.github.io/libnvidia-container"
"""NVIDIA's libnvidia-container repository (Container Toolkit install guide): stable/deb/, stable/rpm/, gpgkey."""
CUDA_REPOSITORY = "https://developer.download.nvidia.com/compute/cuda/repos"
"""NVIDIA's CUDA network repositories (CUDA Installation Guide for Linux): <distro>/x86_64/ below it."""


def cuda_repository_needed(family: str, install_method: str, nvswitches: int, nvlink5_packages: tuple[str, ...]) -> bool:
    """Whether driver.sh installs from NVIDIA's CUDA repository (render/nvidia_packages.py says what comes from where).

    EL: the packaged driver and, with NVSwitches, Fabric Manager and NSCQ (after a runfile driver too).
    Ubuntu: the driver, Fabric Manager and NSCQ come from Ubuntu's archive; only NVLink 5's nvlsm does not.
    The cuda phase installs the toolkit from its runfile, never from a repository.
    """
    if family == "rhel":
        return install_method == "package" or nvswitches > 0
    return nvswitches > 0 and "nvlsm" in nvlink5_packages

# phase -> phases whose outcome it depends on (beyond running after them).
# driver, container-runtime and kubernetes are UPGRADE_MANAGED: after the first
# bootstrap their changes are applied and verified by the upgrade phases
# (upgrade_phases), so verify and kubeconfig do not re-run for them.
LOGICAL_DEPS: dict[str, tuple[str, ...]] = {
    "nouveau-check": ("nouveau",),
    "verify": ("cuda",),
}

UPGRADE_MANAGED = ("driver", "container-runtime", "kubernetes")
"""Bootstrap phases whose `update` is the version gate (scripts/guest/upgrade-gate.sh + the phase):
a later change re-runs the phase only where the node already has the configured
versions; a version change is left to the drained, wave-ordered upgrade phases."""

BODIES: dict[str, tuple[str, ...]] = {
    "upgrade-driver": ("upgrade-skip", "upgrade-unlock", "driver"),
    "upgrade-runtime": ("upgrade-skip", "upgrade-unlock", "container-runtime"),
    "upgrade-kubernetes": ("upgrade-skip", "upgrade-unlock", "upgrade-kubernetes", "kubernetes"),
    "upgrade-reboot": ("upgrade-skip", "upgrade-reboot"),
}
"""Phases whose body is other phase files (in this order) instead of scripts/guest/<phase>.sh."""


@dataclass(frozen=True)
class Phase:
    name: str
    params: dict[str, str]
    stdin_secret: str | None = None  # config secret fed on stdin
    secret_stdout: bool = False
    long_running: bool = False
    waits_for_boot: bool = False  # first contact, or contact after a reboot
    late_params: tuple[str, ...] = field(default=())  # params only known at deploy time (Outputs)


CPU_BODIES: dict[str, tuple[str, ...]] = {"verify": ("verify-cpu",)}
"""Phases whose body on a VM without GPUs (GS_GPU_COUNT=0) is another file: verify.sh asks nvidia-smi."""


def render_script(phase: str, params: dict[str, str]) -> str:
    """The bash text of one phase: header, lib.sh, then the phase body."""
    if params.get("GS_GPU_COUNT") == "0" and phase in CPU_BODIES:
        bodies = CPU_BODIES[phase]
        return _assemble(phase, params, bodies, f"scripts/guest/{bodies[0]}.sh with its parameters")
    return _assemble(phase, params, BODIES.get(phase, (phase,)), f"scripts/guest/{phase}.sh with its parameters")


@functools.cache
def _source(name: str) -> str:
    """scripts/guest/<name>.sh, read once per process: every VM's phases inline the same files."""
    return (SCRIPTS / f"{name}.sh").read_text()


def gate_script(phase: str, params: dict[str, str]) -> str:
    """The `update` of an UPGRADE_MANAGED phase: the version gate, then the phase itself."""
    return _assemble(phase, params, ("upgrade-gate", phase), f"scripts/guest/upgrade-gate.sh, then scripts/guest/{phase}.sh", " on update")


def _assemble(phase: str, params: dict[str, str], bodies: tuple[str, ...], what: str, when: str = "") -> str:
    """The rendered `export` header (parameters sorted, so the text is deterministic), lib.sh, then the bodies."""
    values = {**params, "GS_PHASE": phase}
    header = [
        "#!/usr/bin/env bash",
        f"# gpu-stack guest phase '{phase}'{when}: {what} (render/guest_scripts.py)",
        "set -euo pipefail",
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(values.items())),
    ]
    return "\n".join(header) + "\n\n" + "\n".join(_source(name) for name in ("lib", *bodies))


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


TRIGGER_HEX = 16
"""Hex digits of SHA-256 in a trigger. A trigger only has to change when its text does: 64 bits make an accidental
equal value negligible, and each of a node's commands lists the hashes of several phases, so full 64-digit hashes
were most of a pull request's plan diff for a one-line driver bump (issue 23)."""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:TRIGGER_HEX]


def triggers(phase: str, texts: dict[str, str], deps_of: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Hashes of this phase's text and of the texts of the phases whose outcome it checks (LOGICAL_DEPS by default)."""
    deps = [d for d in (LOGICAL_DEPS if deps_of is None else deps_of).get(phase, ()) if d in texts]
    return [f"{phase}:{digest(texts[phase])}", *(f"{d}:{digest(texts[d])}" for d in deps)]


CLOUD_INIT_TIMEOUT_S = 900
"""How long wait-ssh waits for `cloud-init status --wait` (scripts/guest/wait-ssh.sh). The user-data of
render/cloud_init.py installs no packages (host keys, user, hostname), so first boot's cloud-init ends in
minutes; one that has not finished in 15 (or never started) fails the phase with one line naming the VM."""


# What the root filesystem holds before the driver: the cloud image's OS plus
# what cloud-init installs (about 3 GiB on Ubuntu and EL 9 cloud images), and
# the /boot and EFI partitions. ext4 also keeps 5% of the blocks for root,
# which `df` does not count as available.
GUEST_OS_GIB = 4
FS_RESERVED_FRACTION = 0.05


def min_disk_gib(min_root_free_gib: int) -> int:
    """Smallest root disk on which preflight.sh finds GS_MIN_ROOT_FREE_GIB free on /."""
    return math.ceil((min_root_free_gib + GUEST_OS_GIB) / (1 - FS_RESERVED_FRACTION))


def _proxy(guest: Guest) -> dict[str, str]:
    """The proxy URLs (never with credentials: config/types.py refuses them) and the two user names.

    A set user tells every phase that reads a proxy or a mirror to take the credentials from the
    root-only files the credentials phase wrote (scripts/guest/credentials.sh, lib.sh)."""
    p = guest.proxy
    return {
        "GS_HTTP_PROXY": (p.http or "") if p else "",
        "GS_HTTPS_PROXY": (p.https or "") if p else "",
        "GS_PROXY_USER": (p.username or "") if p else "",
        "GS_REPO_USER": guest.repository_username or "",
    }


def authenticated_hosts(guest: Guest, kubernetes: Kubernetes | None) -> tuple[str, ...]:
    """scheme://host[:port] of every configured mirror and runfile URL: where repositoryUsername's credentials go.

    The vendors' default repositories get none; neither does a runfile given as a host path."""
    urls = [guest.repositories.nvidia_container_toolkit, guest.repositories.cuda, guest.container_runtime.docker_repository,
            kubernetes.package_repository if kubernetes is not None else None, guest.nvidia.runfile_url,
            guest.nvidia.cuda.runfile_url if guest.nvidia.cuda is not None else None]
    hosts = []
    for url in urls:
        parts = urlsplit(url) if url else None
        if parts and parts.scheme in ("http", "https") and parts.netloc:
            hosts.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(dict.fromkeys(hosts))


def credentials_phase(guest: Guest, kubernetes: Kubernetes | None) -> Phase | None:
    """Writes the proxy and mirror credentials to root-only files on the guest, or None when none are configured.

    The passwords arrive on stdin (secret guestCredentials: proxyPassword, then repositoryPassword, one
    line each, those whose user is set), never in the script or the plan."""
    proxy = _proxy(guest)
    if not (proxy["GS_PROXY_USER"] or proxy["GS_REPO_USER"]):
        return None
    return Phase("credentials", {**proxy, "GS_REPO_HOSTS": " ".join(authenticated_hosts(guest, kubernetes)) if proxy["GS_REPO_USER"] else ""},
                 stdin_secret=CREDENTIALS_SECRET)


CREDENTIALS_SECRET = "guestCredentials"
"""The stdin of phase credentials: not a config key, the lines compose.guest_credentials builds from proxyPassword and repositoryPassword."""


def credentials_stdin_names(guest: Guest) -> tuple[str, ...]:
    """The secrets phase credentials reads from stdin, in order (scripts/guest/credentials.sh)."""
    return tuple(name for name, user in (("proxyPassword", guest.proxy.username if guest.proxy else None),
                                         ("repositoryPassword", guest.repository_username)) if user)


def kernel_modules(vm: Vm, guest: Guest) -> str:
    """open or proprietary: guest.nvidia.kernelModules, else the default for the VM's GPUs (stacks.checks refuses a VM with none)."""
    return guest.nvidia.kernel_modules or default_kernel_modules({GPU_MODELS[g.model].architecture for g in vm.gpus}) or "proprietary"


def guest_phases(vm: Vm, guest: Guest, kubernetes: Kubernetes | None, role: str) -> list[Phase]:
    """Ordered phases for one VM. role: init, join or none (existing cluster / no Kubernetes).

    A join to `kubernetes.join` takes endpoint and CA hash from config; a join to
    this stack's own init VM gets them at deploy time (late_params).
    """
    proxy = _proxy(guest)
    no_proxy = ",".join(guest.proxy.no_proxy) if guest.proxy else ""
    nv = guest.nvidia
    counts = {"GS_GPU_COUNT": str(len(vm.gpus)), "GS_NVSWITCH_COUNT": str(len(vm.nvswitches))}
    fabric = fabric_packages(guest.os.family, nv.driver_version, nvlink_generation=nvlink_generation([g.model for g in vm.gpus]))
    repos = guest.repositories
    rt = guest.container_runtime
    nct_repo = repos.nvidia_container_toolkit or NVIDIA_CONTAINER_TOOLKIT_REPOSITORY
    cuda_repo = (repos.cuda or CUDA_REPOSITORY) if cuda_repository_needed(
        guest.os.family, nv.install_method, len(vm.nvswitches), fabric.nvlink5) else ""
    if not vm.gpus:
        # a VM without GPUs gets no NVIDIA container toolkit and no nvidia runtime (issue 26 item 2): the
        # container-runtime phase leaves out NVIDIA's repository, the toolkit and `nvidia-ctk runtime configure`
        nct_repo = ""
    docker_repo = rt.docker_repository or DOCKER_REPOSITORY
    phases = [
        Phase("wait-ssh", {"GS_VM_NAME": vm.name, "GS_CLOUD_INIT_TIMEOUT": str(CLOUD_INIT_TIMEOUT_S)}, waits_for_boot=True),
        *filter(None, [credentials_phase(guest, kubernetes)]),
        Phase("preflight", {
            "GS_OS_FAMILY": guest.os.family, "GS_OS_VERSION": guest.os.version,
            "GS_MIN_ROOT_FREE_GIB": str(guest.min_root_free_gib), "GS_DRIVER_METHOD": nv.install_method, **counts,
            "GS_NCT_REPO": nct_repo, "GS_CUDA_REPO": cuda_repo,
            "GS_DOCKER_REPO": docker_repo if rt.name == "docker" or guest.os.family != "ubuntu" else "", **proxy,
        }),
        Phase("os-prep", {
            "GS_HOSTNAME": vm.name, "GS_SELINUX": guest.selinux,
            "GS_DISABLE_FIREWALLD": "1" if guest.disable_firewalld else "0", **proxy,
        }),
    ]
    gpu = bool(vm.gpus)
    if gpu:
        # a VM without GPUs (a CPU-only control plane) gets no driver, no nouveau blacklist, no CUDA
        phases += [Phase("nouveau", {}), Phase("nouveau-check", {}, waits_for_boot=True)]
        phases.append(Phase("driver", {
            "GS_DRIVER_VERSION": nv.driver_version, "GS_DRIVER_METHOD": nv.install_method,
            "GS_KERNEL_MODULES": kernel_modules(vm, guest),
            "GS_DRIVER_RUNFILE_URL": nv.runfile_url or "", "GS_NVSWITCH_COUNT": counts["GS_NVSWITCH_COUNT"], **proxy,
            "GS_FM_PACKAGES": " ".join(fabric.install), "GS_FM_PROBE": fabric.probe, "GS_FM_HOLD": " ".join(fabric.hold),
            "GS_NVLINK5_PACKAGES": " ".join(fabric.nvlink5), "GS_CUDA_REPO": cuda_repo,
        }, long_running=True))
    if gpu and nv.cuda is not None:
        phases.append(Phase("cuda", {"GS_CUDA_VERSION": nv.cuda.version, "GS_CUDA_RUNFILE_URL": nv.cuda.runfile_url, **proxy}, long_running=True))
    phases.append(Phase("container-runtime", {
        "GS_RUNTIME": rt.name, "GS_TOOLKIT_VERSION": rt.nvidia_toolkit_version if gpu else "",
        "GS_NVIDIA_DEFAULT": "1" if rt.nvidia_default and gpu else "0",
        "GS_REGISTRY_MIRRORS": " ".join(f"{m.registry}={m.endpoint}" for m in guest.registry_mirrors),
        "GS_REGISTRY_USER": guest.registry_username or "", "GS_NO_PROXY": no_proxy, **proxy,
        "GS_DOCKER_REPO": docker_repo, "GS_NCT_REPO": nct_repo,
    }, stdin_secret="registryPassword" if guest.registry_username else None))
    if kubernetes is not None and role in ("init", "join"):
        minor = ".".join(kubernetes.version.split(".")[:2])
        params = {
            "GS_K8S_VERSION": kubernetes.version, "GS_K8S_ROLE": role, "GS_POD_CIDR": kubernetes.pod_cidr,
            "GS_SERVICE_CIDR": kubernetes.service_cidr,
            "GS_NODE_NAME": vm.name, "GS_RUNTIME": rt.name,
            "GS_K8S_REPO": kubernetes.package_repository or f"https://pkgs.k8s.io/core:/stable:/v{minor}",
            # kubernetes.nodeLabels and nodeTaints are the GPU nodes' (nvidia.com/gpu.present, nvidia.com/gpu):
            # a VM without GPUs gets neither (convergence/analysis.py rule_cpu_nodes)
            "GS_NODE_LABELS": " ".join(f"{k}={v}" for k, v in sorted(kubernetes.node_labels.items())) if gpu else "",
            "GS_NODE_TAINTS": " ".join(f"{t.key}={t.value}:{t.effect}" for t in kubernetes.node_taints) if gpu else "",
            "GS_HTTP_PROXY": proxy["GS_HTTP_PROXY"], "GS_HTTPS_PROXY": proxy["GS_HTTPS_PROXY"], "GS_PROXY_USER": proxy["GS_PROXY_USER"], "GS_REPO_USER": proxy["GS_REPO_USER"],
            "GS_K8S_ENDPOINT": "", "GS_K8S_CA_HASH": "",
        }
        late: tuple[str, ...] = ()
        if role == "join" and kubernetes.join is not None:
            params["GS_K8S_ENDPOINT"] = kubernetes.join.control_plane_endpoint
            params["GS_K8S_CA_HASH"] = kubernetes.join.ca_cert_hash
        elif role == "join":
            late = ("GS_K8S_ENDPOINT", "GS_K8S_CA_HASH")
        # init needs no token; a join reads it on stdin: the joinToken secret (mode join) or
        # the short-lived token this stack's control plane creates for the VM (join_token_phase)
        stdin = "joinToken" if role == "join" else None
        phases.append(Phase("kubernetes", params, stdin_secret=stdin, long_running=True, late_params=late))
        if role == "init":
            phases.append(Phase("kubeconfig", {}, secret_stdout=True))
    # GS_ANNOTATE: record the installed versions and the GPUs on the Node (lib.sh record_on_node), where gpu-stack joined it
    phases.append(Phase("verify", {**counts, "GS_RUNTIME": rt.name, "GS_NODE_NAME": vm.name,
                                   "GS_ANNOTATE": "1" if kubernetes is not None and role in ("init", "join") else "0"}))
    return phases


def join_token_phase(vm: Vm, kubernetes: Kubernetes) -> Phase:
    """Runs on the init VM: a bootstrap token for `vm` alone, expiring after kubernetes.joinTokenTtl.

    Its triggers are its own script (which names the node) and the joining VM's
    domain: an unchanged stack creates no new token, a rebuilt VM gets one.
    """
    return Phase("join-token", {"GS_JOIN_NODE": vm.name, "GS_TOKEN_TTL": kubernetes.join_token_ttl}, secret_stdout=True)


# --- day 2: the upgrade path (docs/OPERATIONS.md, Upgrading) -------------------

NODE_STEPS = ("upgrade-driver", "upgrade-runtime", "upgrade-kubernetes")
"""The steps that change a node; the others (check, drain, reboot, verify, uncordon) re-run when any of them does."""

UPGRADE_DEPS: dict[str, tuple[str, ...]] = {
    "upgrade-check": NODE_STEPS,
    "drain": NODE_STEPS,
    "upgrade-reboot": ("upgrade-driver",),
    "upgrade-verify": NODE_STEPS,
    "uncordon": NODE_STEPS,
    "burn-in": NODE_STEPS,
}
"""Upgrade phase -> upgrade steps whose scripts are in its triggers."""

UPGRADE_ORDER = ("upgrade-check", "drain", "upgrade-driver", "upgrade-runtime", "upgrade-kubernetes",
                 "upgrade-reboot", "upgrade-verify", "burn-in", "uncordon")
ON_CONTROL_PLANE = ("drain", "burn-in", "uncordon")
"""Phases that run kubectl on the stack's first VM (admin kubeconfig, or gpu-stack:kubeconfig on stdin), not on the node."""

TOOLKIT_PACKAGES = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools", "libnvidia-container1")
"""What container-runtime.sh pins and holds at guest.containerRuntime.nvidiaToolkitVersion: the set NVIDIA's
install guide installs together (container-toolkit 1.17.8 and 1.20.0 install guides, "NVIDIA_CONTAINER_TOOLKIT_VERSION")."""

FABRIC_TIMEOUT_S = 300
"""Fabric state Completed after a reboot: Fabric Manager waits 30 s for the GPUs, 47 s were seen in a CC guest (FIELD-FACTS)."""


def upgrade_phases(vm: Vm, bootstrap: list[Phase], fleet: Fleet, role: str, control_plane: bool,
                   gpu_resource: str, expected_allocatable: int | None, plugin_logs: str,
                   kubeconfig_on_stdin: bool, in_cluster: bool = False, family: str = "rhel", burn_in: Phase | None = None) -> list[Phase]:
    """The upgrade path of one node, in order: what re-runs after the first bootstrap when a version changes.

    Each phase is a command whose `create` is empty (nothing runs on the first
    bootstrap) and whose `update` is the script: Pulumi runs it only when the
    phase's triggers (its script and the scripts of the steps it checks) change.
    Any change of a script re-runs it, also a gpu-stack release that changes no
    version: upgrade-check then finds the node at its versions and every other
    phase changes nothing (no cordon, drain, package, reboot or uncordon; lib.sh ROLLOUT_FILE).
    role: init, join or none. control_plane: this node runs `kubeadm upgrade apply`.
    family: the guest OS family (guest.os.family); the dnf versionlock unlock list is rendered for rhel only.
    burn_in: the node's burn-in phase (render/burnin_gate.burnin_phase, mode upgrade), run between upgrade-verify and
    uncordon on a managed node with GPUs; None: no burn-in (burnIn.enabled false, no GPUs).
    kubeconfig_on_stdin: drain and uncordon get gpu-stack:kubeconfig on stdin (mode join)
    instead of the first VM's admin.conf (mode init). in_cluster: the node is a member of a
    cluster this stack does not manage (mode existing), which gpu-stack cannot drain.
    """
    by_name = {p.name: p for p in bootstrap}
    # a VM without GPUs has no driver phase: no upgrade-driver or upgrade-reboot, and an empty driver version,
    # which upgrade-check and upgrade-verify compare with the (absent) loaded module's: equal, nothing to roll
    gpu = "driver" in by_name
    drv = by_name["driver"].params if gpu else {"GS_DRIVER_VERSION": "", "GS_NVSWITCH_COUNT": "0", "GS_FM_PROBE": "", "GS_FM_HOLD": ""}
    rt = by_name["container-runtime"].params
    k8s = by_name.get("kubernetes")
    managed = role in ("init", "join")
    k8s_version = k8s.params["GS_K8S_VERSION"] if k8s is not None else ""
    fm_probe = drv["GS_FM_PROBE"] if drv["GS_NVSWITCH_COUNT"] != "0" else ""
    base = {"GS_NODE_NAME": vm.name}

    def unlock(pairs: list[tuple[str, str]]) -> dict[str, str]:
        # scripts/guest/upgrade-unlock.sh reads it on EL only (dnf versionlock); empty elsewhere, so that a
        # version change on Ubuntu does not show as a long line of EL package names in the plan diff
        return {"GS_UNLOCK": " ".join(f"{n}={v}" for n, v in pairs) if family == "rhel" else ""}

    # EL9: what driver.sh locks: nvidia-driver-cuda and the kmod of the flavour guest.nvidia.kernelModules
    # chose, plus nvidia-driver below branch 560 (and on a node first installed that way)
    driver_unlock = [(name, drv["GS_DRIVER_VERSION"]) for name in (
        "nvidia-driver", "nvidia-driver-cuda", "kmod-nvidia-latest-dkms", "kmod-nvidia-open-dkms",
        "nvidia-driver-cuda-libs", "nvidia-kmod-common", "nvidia-persistenced")]
    # both namings on EL: a 570 -> 580 change replaces the locked nvidia-fabric-manager by nvidia-fabricmanager
    fm_names = dict.fromkeys([*drv["GS_FM_HOLD"].split(), "nvidia-fabric-manager", "nvidia-fabricmanager", "libnvidia-nscq"])
    driver_unlock += [(name, drv["GS_DRIVER_VERSION"]) for name in fm_names]
    phases = [
        # the versions it compares the node's with (scripts/guest/upgrade-check.sh): a change of any re-renders it
        Phase("upgrade-check", {**base, "GS_K8S_VERSION": k8s_version, "GS_GPU_COUNT": str(len(vm.gpus)),
                                "GS_DRIVER_VERSION": drv["GS_DRIVER_VERSION"], "GS_NVSWITCH_COUNT": str(len(vm.nvswitches)),
                                "GS_FM_PROBE": fm_probe, "GS_TOOLKIT_VERSION": rt["GS_TOOLKIT_VERSION"],
                                "GS_CONTROL_PLANE": "1" if control_plane else "0", "GS_ANNOTATE": "1" if managed else "0",
                                "GS_UNDRAINED": "1" if role == "none" and in_cluster and not fleet.drained_externally else "0"}),
    ]
    if managed:
        phases.append(Phase("drain", {**base, "GS_DRAIN_TIMEOUT": str(fleet.drain_timeout_seconds),
                                      "GS_K8S_VERSION": k8s_version, "GS_CONTROL_PLANE": "1" if control_plane else "0",
                                      "GS_KUBECONFIG_STDIN": "1" if kubeconfig_on_stdin else "0"},
                            stdin_secret="kubeconfig" if kubeconfig_on_stdin else None, long_running=True))
    if gpu:
        phases.append(Phase("upgrade-driver", {**drv, **unlock(driver_unlock), "GS_UPGRADE": "1"}, long_running=True))
    toolkit_unlock = [(name, rt["GS_TOOLKIT_VERSION"]) for name in TOOLKIT_PACKAGES] if rt["GS_TOOLKIT_VERSION"] else []
    phases.append(Phase("upgrade-runtime", {**rt, **unlock(toolkit_unlock), "GS_UPGRADE": "1"},
                        stdin_secret=by_name["container-runtime"].stdin_secret, long_running=True))
    if k8s is not None:
        params = {**k8s.params, "GS_K8S_ENDPOINT": k8s.params["GS_K8S_ENDPOINT"] if not k8s.late_params else "",
                  "GS_K8S_CA_HASH": k8s.params["GS_K8S_CA_HASH"] if not k8s.late_params else "",
                  "GS_CONTROL_PLANE": "1" if control_plane else "0", "GS_UPGRADE": "1",
                  **unlock([(n, k8s_version) for n in ("kubeadm", "kubelet", "kubectl")])}
        phases.append(Phase("upgrade-kubernetes", params, stdin_secret="joinToken", long_running=True))
    if gpu:
        phases.append(Phase("upgrade-reboot", {**base}))
    phases.append(Phase("upgrade-verify", {
        **base, "GS_GPU_COUNT": str(len(vm.gpus)), "GS_NVSWITCH_COUNT": str(len(vm.nvswitches)),
        "GS_DRIVER_VERSION": drv["GS_DRIVER_VERSION"], "GS_FM_PROBE": fm_probe,
        "GS_TOOLKIT_VERSION": rt["GS_TOOLKIT_VERSION"], "GS_RUNTIME": rt["GS_RUNTIME"],
        "GS_K8S_VERSION": k8s_version, "GS_FABRIC_TIMEOUT": str(FABRIC_TIMEOUT_S), "GS_GATE_INTERVAL": "5",
    }, waits_for_boot=True, long_running=True))
    if managed and burn_in is not None:
        phases.append(burn_in)  # issue 27: the node burns in while still cordoned (render/burnin_gate.py)
    if managed:
        phases.append(Phase("uncordon", {
            **base, "GS_GPU_RESOURCE": gpu_resource, "GS_EXPECTED": "" if expected_allocatable is None else str(expected_allocatable),
            "GS_PLUGIN_LOGS": plugin_logs, "GS_GATE_TIMEOUT": str(GATE_TIMEOUT_S), "GS_GATE_INTERVAL": "5",
            "GS_KUBECONFIG_STDIN": "1" if kubeconfig_on_stdin else "0",
        }, stdin_secret="kubeconfig" if kubeconfig_on_stdin else None, long_running=True))
    return phases


def upgrade_triggers(phase: str, scripts: dict[str, str]) -> list[str]:
    """Hashes of this upgrade phase and of the node steps it checks (those present)."""
    return triggers(phase, scripts, UPGRADE_DEPS)


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
