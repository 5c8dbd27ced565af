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

import grpc
import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from facts.host_facts import ENV as HOST_FACTS_ENV
from render.iommu import nodedev_name
from hypervisors.vsphere.render import NVIDIA_VENDOR_ID

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


def isolated_node_device(name: str) -> dict:
    """A node device alone in its IOMMU group: what the offline plan assumes."""
    parts = name.removeprefix("pci_").split("_")
    domain, bus, slot, function = parts
    return {
        "name": name,
        "xml": f"<device><name>{name}</name><capability type='pci'><class>0x030200</class></capability></device>",
        "capability": {
            "type": "pci",
            "class": "0x030200",
            "vendor": {"id": "0x10de", "name": "NVIDIA Corporation"},
            "product": {"id": "0x0000", "name": "offline plan: not read from the host"},
            "iommuGroup": {
                "number": str(int(bus, 16)),
                "addresses": [{"domain": f"0x{domain}", "bus": f"0x{bus}", "slot": f"0x{slot}", "function": f"0x{function}"}],
            },
        },
    }


# --- vSphere invokes ------------------------------------------------------ begin vsphere

# ESXi names PCI devices as the PCI ID database does (`lspci` on the host).
VSPHERE_DEVICE_NAMES = {
    "P100-PCIE-16GB": "GP100GL [Tesla P100 PCIe 16GB]",
    "V100-PCIE-16GB": "GV100GL [Tesla V100 PCIe 16GB]",
    "A100-PCIE-80GB": "GA100 [A100 PCIe 80GB]",
    "A100-SXM4-80GB": "GA100 [A100 SXM4 80GB]",
    "H100-SXM5-80GB": "GH100 [H100 SXM5 80GB]",
    "H100-PCIE-80GB": "GH100 [H100 PCIe]",
    "L40S": "AD102GL [L40S]",
    "NVSwitch-Gen3": "GH100 [H100 NVSwitch]",
}


def vsphere_pci_device(address: str, model: str) -> dict:
    """One HostPciDevice as getHostPciDevice sees it: id is the host's PCI address."""
    bridge = model.startswith("NVSwitch")
    return {"id": address, "deviceName": VSPHERE_DEVICE_NAMES.get(model, f"NVIDIA {model.replace('-', ' ')}"),
            "vendorId": int(NVIDIA_VENDOR_ID, 16), "classId": 0x0680 if bridge else 0x0302}


def offline_vsphere_pci(config: dict[str, str]) -> dict[str, list[dict]]:
    """What the offline plan assumes: every device the config gives a vSphere host is on it, as configured.

    Keyed by the ESXi host's inventory name (hosts[].vsphere.host), as getHost is asked.
    """
    hosts = json.loads(config.get(f"{PROJECT}:hosts", "[]"))
    vms = json.loads(config.get(f"{PROJECT}:vms", "[]"))
    esxi = {h["name"]: (h.get("vsphere") or {}).get("host") for h in hosts if h.get("kind") == "vsphere"}
    out: dict[str, list[dict]] = {name: [] for name in esxi.values()}
    for vm in vms:
        if vm.get("host") not in esxi:
            continue
        for dev in (*vm.get("gpus", []), *vm.get("nvswitches", [])):
            out[esxi[vm["host"]]].append(vsphere_pci_device(dev["address"].lower(), dev.get("model", "NVSwitch-Gen3")))
    return out


def _moid(kind: str, name: str) -> str:
    return f"{kind}-{1000 + int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 9000}"


def _uuid(name: str) -> str:
    h = hashlib.sha256(name.encode()).hexdigest()
    return f"42{h[:6]}-{h[6:10]}-{h[10:14]}-{h[14:18]}-{h[18:30]}"


class VsphereInventory:
    """Answers the vSphere data sources gpu-stack calls as a vCenter (or, for ha-datacenter, a standalone ESXi host) would."""

    def __init__(self, pci: dict[str, list[dict]], missing: set[str] | None = None):
        self.pci = pci
        self.missing = missing or set()
        """Inventory names the fake vCenter does not have (tests of the "not found" path)."""
        self.host_names: dict[str, str] = {}

    def call(self, token: str, a: dict) -> dict | tuple[dict, list[tuple[str, str]]]:
        kind = token.split(":")[-1]
        name = a.get("name")
        if name in self.missing:  # as the provider reports it: an invoke failure
            return {}, [("name", f"error fetching {kind.removeprefix('get').lower()}: {name} not found")]
        standalone = a.get("datacenterId") == "ha-datacenter"
        if kind == "getDatacenter":
            return {"id": "ha-datacenter" if name == "ha-datacenter" else _moid("datacenter", name), "name": name, "virtualMachines": []}
        if kind == "getHost":
            host_id = "ha-host" if standalone else _moid("host", name)
            self.host_names[host_id] = name
            return {"id": host_id, "name": name, "datacenterId": a.get("datacenterId"),
                    "resourcePoolId": "ha-root-pool" if standalone else _moid("resgroup", f"host/{name}")}
        if kind == "getComputeCluster":
            return {"id": _moid("domain-c", name), "name": name, "datacenterId": a.get("datacenterId"), "resourcePoolId": _moid("resgroup", f"cluster/{name}")}
        if kind == "getDatastore":
            h = hashlib.sha256(f"datastore/{name}".encode()).hexdigest()
            return {"id": f"{h[:8]}-{h[8:16]}-{h[16:20]}-{h[20:32]}" if standalone else _moid("datastore", name), "name": name, "datacenterId": a.get("datacenterId"), "stats": {}}
        if kind == "getNetwork":
            return {"id": f"HaNetwork-{name}" if standalone else _moid("network", name), "name": name, "type": "Network", "datacenterId": a.get("datacenterId")}
        if kind == "getVirtualMachine":
            return {"id": _uuid(f"vm/{name}"), "name": name, "guestId": "rhel9_64Guest", "scsiType": "pvscsi", "firmware": "efi",
                    "disks": [{"label": "Hard disk 1", "size": 20, "thinProvisioned": True, "eagerlyScrub": False, "unitNumber": 0}],
                    "networkInterfaceTypes": ["vmxnet3"], "datacenterId": a.get("datacenterId")}
        if kind == "getOvfVmTemplate":
            return {"id": name, "name": name, "guestId": "rhel9_64Guest", "scsiType": "pvscsi", "firmware": "efi", "numCpus": 2, "memory": 2048,
                    "hostSystemId": a.get("hostSystemId"), "resourcePoolId": a.get("resourcePoolId"), "datastoreId": a.get("datastoreId"),
                    "remoteOvfUrl": a.get("remoteOvfUrl"), "ovfNetworkMap": a.get("ovfNetworkMap") or {}, "diskProvisioning": "thin"}
        if kind == "getHostPciDevice":
            return self._pci_device(a)
        raise Exception(f"mockrun: no answer for {token}")

    def _pci_device(self, a: dict) -> dict:
        """terraform-provider-vsphere's data source: name regex, then class and vendor; the first match, or no id."""
        host = self.host_names.get(a.get("hostId"), a.get("hostId"))
        regex = re.compile(a.get("nameRegex") or "")
        for dev in sorted(self.pci.get(host, []), key=lambda d: d["id"]):
            if not regex.search(dev["deviceName"]):
                continue
            if a.get("classId") and dev["classId"] != int(a["classId"], 16):
                continue
            if a.get("vendorId") and dev["vendorId"] != int(a["vendorId"], 16):
                continue
            return {"id": dev["id"], "hostId": a.get("hostId"), "name": dev["deviceName"], "nameRegex": a.get("nameRegex"),
                    "classId": f"{dev['classId']:x}", "vendorId": f"{dev['vendorId']:x}"}
        return {"id": "", "hostId": a.get("hostId"), "name": "", "nameRegex": a.get("nameRegex")}


# ------------------------------------------------------------------------- end vsphere


def _fake_ip(name: str) -> str:
    h = hashlib.sha256(name.encode()).digest()
    return f"192.168.122.{10 + h[0] % 200}"


def _fake_stdout(name: str, create: str) -> str:
    """What a converged guest prints, for update-mode runs (the scripts run for real in tests/test_guest_scripts.py)."""
    if not create:  # no create command (the upgrade phases): nothing runs on create
        return ""
    if name.endswith("-verify"):
        count = int(re.search(r"export GS_GPU_COUNT='?(\d+)", create).group(1))
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


class ProviderInvokeError(grpc.RpcError):
    """An invoke the provider answered with an error, as the real engine hands it to the SDK: a gRPC status
    whose details carry the provider's message (pulumi-libvirt 0.5.4 under the real engine: "invocation of
    TOKEN returned an error: invoking TOKEN: 1 error occurred: * <message>"). The SDK raises it to the caller
    of invoke; a plain exception from a mock would instead be an unhandled RPC failure that ends the program."""

    def __init__(self, token: str, message: str):
        super().__init__(message)
        self._details = f"invocation of {token} returned an error: invoking {token}: 1 error occurred:\n\t* {message}\n\n"

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return self._details


class StackMocks(pulumi_mocks.Mocks):
    def __init__(self, preview: bool, node_devices: dict[str, dict] | None = None, outputs: Callable[[pulumi_mocks.MockResourceArgs], dict] | None = None, on_register: Callable[[str, str], None] | None = None,
                 invoke_seconds: float = 0.0, withhold: Callable[[pulumi_mocks.MockResourceArgs], bool] | None = None):
        self.preview = preview
        self.withhold = withhold
        """Preview only: resources whose outputs are all unknown, as a provider that computes them at create reports them
        (the SDK resolves every output the monitor does not return as unknown in a dry run)."""
        self.invoke_seconds = invoke_seconds
        self.on_register = on_register
        self.node_devices = node_devices
        self.extra_outputs = outputs
        self.vsphere: VsphereInventory | None = None
        self.inputs: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, dict]] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        self.inputs[(args.typ, args.name)] = args.inputs
        if self.on_register:
            self.on_register(args.typ, args.name)
        state = dict(args.inputs)
        if self.preview:
            return "", ({} if self.withhold is not None and self.withhold(args) else state)
        if args.typ == "libvirt:index/domain:Domain":
            nics = [dict(n, addresses=[_fake_ip(args.name)]) for n in state.get("networkInterfaces", [])]
            state["networkInterfaces"] = nics
        if args.typ == "vsphere:index/virtualMachine:VirtualMachine":
            state.update(defaultIpAddress=_fake_ip(args.name), moid=_moid("vm", args.name), uuid=_uuid(args.name))
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
        if args.token == "libvirt:index/getNodeDeviceInfo:getNodeDeviceInfo":
            name = args.args["name"]
            if self.node_devices is not None:
                if name not in self.node_devices:
                    raise ProviderInvokeError(args.token, f"failed to lookup node device: Node device not found: no node device with matching name '{name}'")
                return self.node_devices[name]
            return isolated_node_device(name)
        if args.token.startswith("vsphere:index/") and self.vsphere is not None:
            return self.vsphere.call(args.token, dict(args.args))
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
    node_devices: dict[str, dict] | None = None,
    outputs: Callable[[pulumi_mocks.MockResourceArgs], dict] | None = None,
    on_register: Callable[[str, str], None] | None = None,
    host_facts: list[str] | None = None,
    vsphere_pci: dict[str, list[dict]] | None = None,
    vsphere_missing: set[str] | None = None,
    invoke_seconds: float = 0.0,
    parallel: int = PARALLEL,
    program: Callable[[], None] | None = None,
    withhold: Callable[[pulumi_mocks.MockResourceArgs], bool] | None = None,
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
    """
    if program is None:
        from stacks.compose import main
    else:
        main = program

    mocks = StackMocks(preview, node_devices, outputs, on_register, invoke_seconds, withhold)
    mocks.vsphere = VsphereInventory(offline_vsphere_pci(config) if vsphere_pci is None else vsphere_pci, vsphere_missing)
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
