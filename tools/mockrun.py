"""Run the real gpu-stack program under Pulumi's mock monitor.

Used by the unit tests and by `make plan`. No Pulumi CLI, no provider plugin,
no network. Preview mode behaves like `pulumi preview`: ids and computed
outputs are unknown. Update mode returns deterministic fake outputs.

Resource options are captured with a stack transformation (the SDK runs it
client-side, so it works under mocks); inputs come from the mock monitor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from facts.host_facts import ENV as HOST_FACTS_ENV
from hypervisors.base import HYPERVISORS

PROJECT = "gpu-stack"
SECRET_SIG = "4dabf18193072939515e22adb298388d"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
PARALLEL = 2147483647
"""The CLI's default `--parallel` ("unbounded"): the language host sizes the event loop's default executor with it."""
_executors: dict[int, ThreadPoolExecutor] = {}


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict
    parent: str | None = None
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    provider: str | None = None
    custom: bool = True
    additional_secret_outputs: list[str] = field(default_factory=list)
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    properties: list[str] = field(default_factory=list)
    """The names of the properties the resource declared (inputs and outputs), as its class hands them to the SDK."""


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also keeping each registration's dependencies (explicit and from inputs)."""

    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.dependencies: dict[str, list[str]] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        self.dependencies[response.urn] = sorted(set(request.dependencies))
        return response


@dataclass
class RunResult:
    resources: list[Registered]
    outputs: dict[str, Any]
    registered: dict[str, Any]
    """MockMonitor.get_registered_resources(): URN -> (urn, id, state)."""
    dependencies: dict[str, list[str]] = field(default_factory=dict)
    """URN -> URNs it depends on, as the engine would see them."""
    calls: list[tuple[str, dict]] = field(default_factory=list)
    """Every invoke the program made: (token, args)."""

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> Registered:
        return next(r for r in self.resources if r.name == name)

    def children_of(self, name: str) -> list[Registered]:
        return [r for r in self.resources if r.parent == name]


def _fake_stdout(name: str, create: str) -> str:
    """What a converged guest prints, for update-mode runs (the scripts run for real in tests/test_guest_scripts.py)."""
    if not create:  # no create command (the upgrade phases): nothing runs on create
        return ""
    if name.endswith("-verify"):
        count = int(re.search(r"export GS_GPU_COUNT='?(\d+)", create).group(1))
        if count == 0:  # a VM without GPUs: scripts/guest/verify-cpu.sh prints the inventory header only, never nvidia-smi
            return "--- gpu-inventory ---\n"
        rows = "".join(f"{i}, NVIDIA Mock GPU, GPU-{i:08d}-mock, 00000000:{i + 1:02X}:00.0, 570.172.08, 46068 MiB\n" for i in range(count))
        banner = "| NVIDIA-SMI 570.172.08            Driver Version: 570.172.08     CUDA Version: 12.8     |\n"
        return f"--- gpu-inventory ---\n{rows}--- nvidia-smi ---\n{banner}"
    if name == "readiness-gate":
        resource = re.search(r"export GS_GPU_RESOURCE='?([^'\n]+)", create).group(1)
        nodes = re.search(r"export GS_GATE_NODES='?([^'\n]*)", create).group(1).split()
        job = re.search(r"export GS_SMOKE_JOB='?([^'\n]*)", create).group(1)
        ns = re.search(r"export GS_SMOKE_NAMESPACE='?([^'\n]*)", create).group(1)
        lines = [f"node {n.split('=')[0]} Ready {resource}={n.split('=')[1]}/{n.split('=')[1]}" for n in nodes]
        return "--- readiness ---\n" + "".join(f"{line}\n" for line in lines) + (f"job {ns}/{job} Succeeded\n" if job else "")
    if name.endswith("-join-token"):
        return "# gpu-stack-join-token: mock00.0000000000000000\n"
    if name.endswith("-kubeconfig"):
        return "apiVersion: v1\nkind: Config\nclusters: []\n# gpu-stack-ca-cert-hash: sha256:" + "ab" * 32 + "\n"
    return ""


class StackMocks(pulumi_mocks.Mocks):
    def __init__(self, preview: bool, backends: list | None = None, outputs: Callable[[pulumi_mocks.MockResourceArgs], dict] | None = None, on_register: Callable[[str, str], None] | None = None,
                 invoke_seconds: float = 0.0, withhold: Callable[[pulumi_mocks.MockResourceArgs], bool] | None = None):
        self.preview = preview
        self.withhold = withhold
        """Preview only: resources whose outputs are all unknown, as a provider that computes them at create reports them
        (the SDK resolves every output the monitor does not return as unknown in a dry run)."""
        self.invoke_seconds = invoke_seconds
        self.on_register = on_register
        self.backends = backends or []
        """Each hypervisor's fake provider (hypervisors/base.py Hypervisor.mock): its invokes and its VMs' outputs."""
        self.extra_outputs = outputs
        self.inputs: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, dict]] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        self.inputs[(args.typ, args.name)] = args.inputs
        if self.on_register:
            self.on_register(args.typ, args.name)
        state = dict(args.inputs)
        if self.preview:
            return "", ({} if self.withhold is not None and self.withhold(args) else state)
        for backend in self.backends:
            backend.outputs(args.typ, args.name, state)
        if args.typ == "tls:index/privateKey:PrivateKey":
            state["privateKeyOpenssh"] = f"-----BEGIN OPENSSH PRIVATE KEY-----\nmock-{args.name}\n-----END OPENSSH PRIVATE KEY-----\n"
            state["publicKeyOpenssh"] = f"ssh-ed25519 AAAAmock{hashlib.sha256(args.name.encode()).hexdigest()[:16]}\n"
        if args.typ == "command:remote:Command":
            state.update(stdout=_fake_stdout(args.name, state.get("create", "")), stderr="")
        if self.extra_outputs:
            state.update(self.extra_outputs(args))
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        if self.invoke_seconds:
            time.sleep(self.invoke_seconds)  # a provider's round trip to its host; blocks like monitor.Invoke does
        for backend in self.backends:
            if backend.handles(args.token):
                return backend.invoke(args.token, dict(args.args))
        return {}


def config_values(stack_config: dict[str, Any], placeholder: Callable[[str], str]) -> tuple[dict[str, str], list[str]]:
    """Pulumi.<stack>.yaml `config:` to the engine's string form; `secure:` values become placeholders."""
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in stack_config.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            values[full] = placeholder(full)
            secret_keys.append(full)
        elif isinstance(value, str):
            values[full] = value
        else:
            values[full] = json.dumps(value)
    return values, secret_keys


def run(
    config: dict[str, str],
    secret_keys: list[str],
    *,
    stack: str = "test",
    preview: bool = True,
    outputs: Callable[[pulumi_mocks.MockResourceArgs], dict] | None = None,
    on_register: Callable[[str, str], None] | None = None,
    host_facts: list[str] | None = None,
    invoke_seconds: float = 0.0,
    parallel: int = PARALLEL,
    program: Callable[[], None] | None = None,
    withhold: Callable[[pulumi_mocks.MockResourceArgs], bool] | None = None,
    **backend_options: Any,
) -> RunResult:
    """Run stacks.compose.main under mocks; raises what the program raises.

    `host_facts` are facts files (scripts/host-facts.sh), handed to the program
    as `pulumi preview` gets them: in GPU_STACK_HOST_FACTS. None or [] runs
    without facts, whatever the caller's environment holds. `invoke_seconds`
    delays every invoke, standing in for the provider's round trip to a host.
    `parallel` is `pulumi preview --parallel`: as the language host does
    (pulumi-language-python-exec), the event loop's default executor, where
    the SDK runs its blocking monitor calls, gets that many threads at most.
    `program` replaces stacks.compose.main (tools/bench.py's floor).
    `withhold` (preview only) picks resources whose every output is unknown, as
    in a real `pulumi preview` of a stack where they are still to be created.
    `backend_options` go to the hypervisors' fake providers (hypervisors/<kind>/mock.py), each taking its own:
    node_devices (libvirt's getNodeDeviceInfo answers), vsphere_pci and vsphere_missing (the fake vCenter).
    """
    if program is None:
        from stacks.compose import main
    else:
        main = program

    options = dict(backend_options)
    backends = [h.mock(config, options) for h in HYPERVISORS.values()]
    if options:
        raise TypeError(f"mockrun.run: no hypervisor takes {', '.join(sorted(options))}")
    mocks = StackMocks(preview, backends, outputs, on_register, invoke_seconds, withhold)
    monitor = RecordingMonitor(mocks)
    loop = _ensure_event_loop()
    if parallel not in _executors:
        _executors[parallel] = ThreadPoolExecutor(max_workers=max(parallel, 1), thread_name_prefix=f"mock-parallel-{parallel}")
    loop.set_default_executor(_executors[parallel])
    # a fresh root stack per run: set_mocks reuses the previous one, and with it
    # the previous run's stack transformation
    pulumi.runtime.settings.set_root_resource(None)
    pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    runtime_config.set_all_config(dict(config), secret_keys=list(secret_keys))
    captured: list[Registered] = []
    stack_outputs: dict[str, Any] = {}

    def capture(args: pulumi.ResourceTransformationArgs):
        o = args.opts
        captured.append(Registered(
            type=args.type_,
            name=args.name,
            inputs={},
            parent=getattr(o.parent, "_name", None) if o.parent is not None else None,
            protect=bool(o.protect),
            retain_on_delete=bool(o.retain_on_delete),
            delete_before_replace=bool(o.delete_before_replace),
            ignore_changes=list(o.ignore_changes or []),
            depends_on=[getattr(d, "_name", str(d)) for d in (o.depends_on or [])] if isinstance(o.depends_on, (list, tuple)) else [],
            provider=getattr(o.provider, "_name", None) if o.provider is not None else None,
            custom=isinstance(args.resource, pulumi.CustomResource),
            additional_secret_outputs=list(o.additional_secret_outputs or []),
            custom_timeouts={k: v for k, v in vars(o.custom_timeouts).items() if v} if o.custom_timeouts else {},
            properties=sorted(args.props or {}),
        ))
        return None

    def program():
        pulumi.runtime.register_stack_transformation(capture)
        original_export = pulumi.export

        def export(name, value):
            stack_outputs[name] = value
            original_export(name, value)

        pulumi.export = export
        try:
            main()
        finally:
            pulumi.export = original_export

    saved = os.environ.pop(HOST_FACTS_ENV, None)
    if host_facts:
        os.environ[HOST_FACTS_ENV] = os.pathsep.join(str(p) for p in host_facts)
    try:
        _sync_await(run_pulumi_func(program))
    finally:
        os.environ.pop(HOST_FACTS_ENV, None)
        if saved is not None:
            os.environ[HOST_FACTS_ENV] = saved
    for r in captured:
        r.inputs = mocks.inputs.get((r.type, r.name), {})
    resolved = {k: _resolve(v) for k, v in stack_outputs.items()}
    return RunResult(captured, resolved, monitor.get_registered_resources(), monitor.dependencies, mocks.calls)


def _resolve(value: Any) -> Any:
    """Stack outputs to plain values (unknown -> UNKNOWN, secrets kept as {'secret': value})."""
    if isinstance(value, pulumi.Output):
        async def get():
            known = await value.is_known()
            secret = await value.is_secret()
            inner = await value.future() if known else UNKNOWN
            inner = _resolve(inner)
            return {"[secret]": inner} if secret else inner
        return _sync_await(get())
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolve(v) for v in value]
    return value
