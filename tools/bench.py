"""`make bench`: what a user waits for, for fleets of 1, 8 and 64 VMs with 8 GPUs each.

Each size runs in its own process: the real program under the mock monitor in
preview mode, as `make plan` runs it. In that one process:

- cold start: the imports and the first run, on their own line;
- evaluation: a run after that warm-up, every invoke answered at once;
- with N ms per invoke (`--invoke-ms`, default 20): every getNodeDeviceInfo
  (and any other invoke) takes N ms in the mock provider, standing in for the
  round trip to a hypervisor over qemu+ssh; its extra time over the evaluation,
  and the preflight's share of it (the IOMMU and SMT look-ups: every invoke);
- floor: the same number of resources, of the same types, with the same
  parents and the same total input size, registered under the same mock
  monitor with no rendering and no checks (after its own warm-up run), and
  the ratio of the evaluation to it.

With `--repeat R` each warm measurement is the best of R, taken in turns.
Also reported: peak RSS, resources, and the dependency depth: the longest
chain of resources that must run one after another, counting resources that
do work (not components or providers). Timings are for reading side by side
from one run (ratios), never for tests. A "slower by" that the noise (the
spread of its paired turns) swamps, or that is negative, is marked "(noise)"
and a warning under the table says why (noise_verdict). Each row prints as its
size finishes.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

T0 = time.perf_counter()  # before pulumi and gpu-stack are imported: the cold start counts from here

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 8, 64)


def pins(os_version: str = "22.04") -> tuple[str, str]:
    """The Kubernetes and driver versions the bench runs, from the catalog rather than typed here: the newest patch of
    a supported minor (config/support.py KUBERNETES_NEWEST_PATCH) that the default GPU Operator supports on this OS
    (stacks/compat.py), and the driver the example stacks pin (Pulumi.dev.yaml; tests/test_versions.py checks it
    against the README and the support catalog)."""
    import yaml

    from config import compat, support
    from config.models import GpuOperator
    from config.types import version_tuple

    operator = GpuOperator().version
    kubernetes = max((v for v, _ in support.KUBERNETES_NEWEST_PATCH.values()
                      if not compat.gpu_operator_problems(operator, v, f"ubuntu {os_version}")), key=version_tuple)
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    return kubernetes, str(dev["gpu-stack:guest"]["nvidia"]["driverVersion"])


def burn_in() -> dict:
    """The burn-in settings of seed 000's 8 x H800 as prod gives them (Pulumi.prod.yaml): the catalog has no sourced
    all-reduce figure for the H800, and the burn-in gate (issue 27) refuses a node without one, so the bench takes the
    example stack's rather than typing a figure here; the burn-in stays on, so its Jobs and gates count in the bench."""
    import yaml

    return yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["gpu-stack:burnIn"]


def fleet_config(vms: int) -> dict:
    """One HGX host per VM (8x H800 + 4 NVSwitch, as seed 000), one cluster, GPU Operator and monitoring."""
    kubernetes, driver = pins("22.04")
    hosts, machines = [], []
    for i in range(vms):
        hosts.append({
            "name": f"hgx-{i}", "libvirtUri": f"qemu+ssh://root@hgx-{i}/system",
            # a qemu+ssh host needs its pinned SSH host key (any well-formed key: the bench connects to nothing)
            "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdVSS5CpD8Tmsctnaz7bdCeCXSuvbadPScwXgccCXuh",
            "numaNodes": [{"id": 0, "cpus": "0-55,112-167", "memoryGib": 1024}, {"id": 1, "cpus": "56-111,168-223", "memoryGib": 1024}],
            "reservedCpus": "0,56,112,168", "baseImage": {"source": "/var/lib/libvirt/images/jammy.img"},
        })
        machines.append({
            "name": f"gpu-{i}", "host": f"hgx-{i}", "vcpus": 64, "memoryGib": 256,
            "gpus": [{"address": f"0000:{b:02x}:00.0", "model": "H800-SXM5-80GB", "numaNode": 0 if n < 4 else 1}
                     for n, b in enumerate((0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB))],
            "nvswitches": [{"address": f"0000:0{5 + n}:00.0", "numaNode": 0} for n in range(4)],
        })
    return {
        "hosts": hosts, "vms": machines,
        "guest": {"os": {"family": "ubuntu", "version": "22.04"}, "sshPublicKey": "ssh-ed25519 AAAA bench",
                  "nvidia": {"driverVersion": driver}},
        "kubernetes": {"version": kubernetes, "mode": "init", "nodeTaints": []},
        "addons": {"gpuOperator": {"enabled": True}, "monitoring": {"enabled": True}},
        "burnIn": burn_in(),
    }


def depth(result) -> int:
    """Longest chain of resources that do work on the first `pulumi up`; dependencies are registered before their dependents.

    Components and providers do no work; neither do the day-2 upgrade
    commands (components/node_upgrade.py: no `create`, only `update`), whose
    chain across the waves runs only when a version changes.
    """
    update_only = {r.name for r in result.resources if r.type == "command:remote:Command" and not r.inputs.get("create")}
    kinds = {}
    for urn in result.registered:
        type_ = urn.split("::")[2].split("$")[-1]
        kinds[urn] = (not type_.startswith("pulumi:providers:") and not type_.startswith("gpu-stack:")
                      and urn.rsplit("::", 1)[-1] not in update_only)
    longest: dict[str, int] = {}
    for urn in result.registered:  # registration order
        before = max((longest.get(d, 0) for d in result.dependencies.get(urn, [])), default=0)
        longest[urn] = before + (1 if kinds[urn] else 0)
    return max(longest.values(), default=0)


def _inputs_size(inputs) -> int:
    return len(json.dumps(inputs, sort_keys=True, default=str))


def floor_program(result):
    """A program registering what `result` registered (type, name, parent, input size), with nothing computed."""
    import pulumi

    # every property the typed class declared (the SDK resolves an output for each), one input carrying the size
    shapes = [(r.type, r.name, r.parent, r.custom, {**dict.fromkeys(r.properties), "input": "x" * _inputs_size(r.inputs)})
              for r in result.resources]

    from stacks.compose import tune_collector

    # Typed, as a real program's resources are: each class below adds the one
    # `__init__` that every generated resource class (pulumi_command.remote.Command,
    # pulumi_libvirt.Domain, ...) and every ComponentResource subclass has. The SDK
    # records a resource's source stack trace only from that third `__init__` on
    # (pulumi/runtime/resource.py _get_stack_trace), so registering with the bare
    # base classes would leave out work that every typed resource costs.
    class Provider(pulumi.ProviderResource):
        def __init__(self, pkg, name, props, opts):
            super().__init__(pkg, name, props, opts)

    class Custom(pulumi.CustomResource):
        def __init__(self, type_, name, props, opts):
            super().__init__(type_, name, props, opts)

    class Component(pulumi.ComponentResource):
        def __init__(self, type_, name, opts):
            super().__init__(type_, name, None, opts)
            self.register_outputs({})

    def program() -> None:
        tune_collector()  # the process's collector set as the program sets it: the same conditions
        made: dict[str, pulumi.Resource] = {}
        for type_, name, parent, custom, props in shapes:
            opts = pulumi.ResourceOptions(parent=made.get(parent))
            if type_.startswith("pulumi:providers:"):
                made[name] = Provider(type_.removeprefix("pulumi:providers:"), name, dict(props), opts)
            elif custom:
                made[name] = Custom(type_, name, dict(props), opts)
            else:
                made[name] = Component(type_, name, opts)
    return program


def noise_verdict(slow: list[float], warm: list[float], label: str = "slower by") -> str | None:
    """Whether the paired differences `slow[i] - warm[i]` measure anything: None when the effect (their median)
    stands out of the noise, else one line saying why not.

    The noise is the spread (max - min) of the paired differences: how far two
    turns of the same measurement disagree. An effect no larger than that, or
    below zero (a delay added to every invoke cannot make a run faster), is the
    machine's load, not the program; one turn has no spread to compare with.
    """
    diffs = [s - w for s, w in zip(slow, warm)]
    if not diffs:
        return f"{label}: no paired runs"
    effect = statistics.median(diffs)
    if len(diffs) < 2:
        return f"{label} {effect:+.2f} s from one turn: the noise is not measured (use --repeat 3 or more)"
    spread = max(diffs) - min(diffs)
    if effect < 0:
        return (f"{label} {effect:+.2f} s is negative: the machine was busier during the 0 ms runs than the delayed ones "
                f"(noise {spread:.2f} s over {len(diffs)} turns); rerun on an idle machine")
    if spread >= effect:
        return (f"{label} {effect:+.2f} s is within the noise: the {len(diffs)} paired turns spread over {spread:.2f} s; "
                f"rerun on an idle machine or with a larger --repeat")
    return None


def measure(vms: int, invoke_ms: float, repeat: int, parallel: int | None = None) -> dict:
    from tools import mockrun
    import hypervisors.libvirt.preflight as preflight

    raw = fleet_config(vms)
    values = {f"gpu-stack:{k}": json.dumps(v) for k, v in raw.items()}
    secrets = {"gpu-stack:sshPrivateKey": "bench-key", "gpu-stack:grafanaAdminPassword": "bench"}
    config = {**values, **secrets}

    cpu: dict[str, list[float]] = {"warm": [], "floor": []}

    def timed(kind: str | None = None, **kw) -> float:
        # none of the previous run's garbage is this run's to collect; the collector stays on during
        # the run, as in a real preview (it is about 40% of a 64-VM run, program and floor alike)
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        mockrun.run(config, list(secrets), stack="bench", preview=True, parallel=parallel, **kw)
        if kind is not None:
            cpu[kind].append(time.process_time() - start_cpu)  # every thread of the process: the mock monitor's too
        return time.perf_counter() - start

    parallel = mockrun.PARALLEL if parallel is None else parallel
    result = mockrun.run(config, list(secrets), stack="bench", preview=True, parallel=parallel)
    cold = time.perf_counter() - T0
    floor = floor_program(result)
    timed(program=floor)  # the floor's own warm-up

    # every invoke of the program is in these two: the IOMMU look-ups and the SMT look-ups (getNodeInfo)
    preflights = {name: getattr(preflight, name) for name in ("iommu_preflight", "smt_preflight")}
    spent: list[float] = []

    def clocked(function):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)
        return run

    warm, warm_preflight, slow, slow_preflight, base = [], [], [], [], []
    for name, function in preflights.items():
        setattr(preflight, name, clocked(function))
    try:
        for _ in range(repeat):
            spent.clear()
            warm.append(timed("warm"))
            warm_preflight.append(sum(spent))
            spent.clear()
            slow.append(timed(invoke_seconds=invoke_ms / 1000))
            slow_preflight.append(sum(spent))
            base.append(timed("floor", program=floor))
    finally:
        for name, function in preflights.items():
            setattr(preflight, name, function)
    i = min(range(repeat), key=lambda k: slow[k])
    w = min(range(repeat), key=lambda k: warm[k])
    floor_s = min(base)
    reboots = sum(1 for r in result.resources if r.name.endswith("-guest-nouveau"))
    return {
        "vms": vms, "gpus": 8 * vms, "cold_seconds": round(cold, 2), "seconds": round(warm[w], 3), "preflight_seconds": round(warm_preflight[w], 3),
        "invoke_ms": invoke_ms, "slow_seconds": round(slow[i], 3), "slow_preflight_seconds": round(slow_preflight[i], 3),
        # each slow run follows its warm run: the median of those paired differences cancels the machine's drift
        "slower_by_seconds": round(statistics.median(s - w for s, w in zip(slow, warm)), 3),
        "preflight_slower_by_seconds": round(statistics.median(s - w for s, w in zip(slow_preflight, warm_preflight)), 3),
        "noise": [v for v in (noise_verdict(slow, warm), noise_verdict(slow_preflight, warm_preflight, "preflight slower by"))
                  if v is not None],
        "floor_seconds": round(floor_s, 3), "ratio": round(warm[w] / floor_s, 2),
        "cpu_seconds": round(min(cpu["warm"]), 3), "floor_cpu_seconds": round(min(cpu["floor"]), 3),
        "cpu_ratio": round(min(cpu["warm"]) / min(cpu["floor"]), 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "resources": len(result.resources), "depth": depth(result), "reboot_points_per_vm": reboots // vms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoke-ms", type=float, default=20.0, help="simulated round trip per invoke (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="best of R for each warm measurement (default 3)")
    parser.add_argument("--parallel", type=int, help="`pulumi preview --parallel`: threads for the SDK's monitor calls (default: the CLI's, unbounded)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes (default 1,8,64)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.invoke_ms, max(args.repeat, 1), args.parallel)))
        return 0
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"make bench: fleets of {', '.join(map(str, sizes))} VMs, each in its own process, best of {args.repeat} turns; "
          "a row prints as each size finishes (the 64-VM fleet takes minutes)", flush=True)
    ms = f"{args.invoke_ms:g} ms"
    print(f"| VMs | GPUs | evaluation (s) | s per VM | floor (s) | ratio to floor | CPU ratio to floor | with {ms} per invoke (s) | slower by (s) "
          f"| preflight (s) | preflight at {ms} (s) | preflight slower by (s) | peak RSS (MiB) | resources | dependency depth | reboot points per VM |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-m", "tools.bench", "--one", str(n), "--invoke-ms", str(args.invoke_ms), "--repeat", str(args.repeat),
                              *(["--parallel", str(args.parallel)] if args.parallel else [])],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        noisy = "" if not r["noise"] else " (noise)"
        print(f"| {r['vms']} | {r['gpus']} | {r['seconds']:.2f} | {r['seconds'] / r['vms']:.3f} | {r['floor_seconds']:.2f} | {r['ratio']:.2f}x | {r['cpu_ratio']:.2f}x "
              f"| {r['slow_seconds']:.2f} | {r['slower_by_seconds']:+.2f}{noisy if any(v.startswith('slower by') for v in r['noise']) else ''} "
              f"| {r['preflight_seconds']:.2f} | {r['slow_preflight_seconds']:.2f} "
              f"| {r['preflight_slower_by_seconds']:+.2f}{noisy if any(v.startswith('preflight') for v in r['noise']) else ''} "
              f"| {r['peak_rss_mib']} | {r['resources']} | {r['depth']} | {r['reboot_points_per_vm']} |", flush=True)
    print()
    print("cold start (imports and the first run): " + ", ".join(f"{r['vms']} VM{'s' if r['vms'] > 1 else ''} {r['cold_seconds']:.2f} s" for r in rows))
    for r in rows:
        for verdict in r["noise"]:
            print(f"warning: {r['vms']} VM{'s' if r['vms'] > 1 else ''}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
