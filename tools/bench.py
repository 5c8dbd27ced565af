"""`make bench`: the program's cost and shape for fleets of 1, 8 and 64 VMs with 8 GPUs each.

Each size runs in its own process (so peak memory is that size's alone): the
real program under the mock monitor in preview mode, as `make plan` runs it.
Reported: evaluation time, peak RSS, resources, and the dependency depth: the
longest chain of resources that must run one after another, counting
resources that do work (not components or providers).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 8, 64)


def fleet_config(vms: int) -> dict:
    """One HGX host per VM (8x H800 + 4 NVSwitch, as seed 000), one cluster, GPU Operator and monitoring."""
    hosts, machines = [], []
    for i in range(vms):
        hosts.append({
            "name": f"hgx-{i}", "libvirtUri": f"qemu+ssh://root@hgx-{i}/system",
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
                  "nvidia": {"driverVersion": "570.172.08"}},
        "kubernetes": {"version": "1.32.4", "mode": "init", "nodeTaints": []},
        "addons": {"gpuOperator": {"enabled": True}, "monitoring": {"enabled": True}},
    }


def depth(result) -> int:
    """Longest chain of working resources; dependencies are registered before their dependents."""
    kinds = {}
    for urn in result.registered:
        type_ = urn.split("::")[2].split("$")[-1]
        kinds[urn] = not type_.startswith("pulumi:providers:") and not type_.startswith("gpu-stack:")
    longest: dict[str, int] = {}
    for urn in result.registered:  # registration order
        before = max((longest.get(d, 0) for d in result.dependencies.get(urn, [])), default=0)
        longest[urn] = before + (1 if kinds[urn] else 0)
    return max(longest.values(), default=0)


def measure(vms: int) -> dict:
    from tools import mockrun

    raw = fleet_config(vms)
    values = {f"gpu-stack:{k}": json.dumps(v) for k, v in raw.items()}
    secrets = {"gpu-stack:sshPrivateKey": "bench-key", "gpu-stack:grafanaAdminPassword": "bench"}
    start = time.perf_counter()
    result = mockrun.run({**values, **secrets}, list(secrets), stack="bench", preview=True)
    seconds = time.perf_counter() - start
    reboots = sum(1 for r in result.resources if r.name.endswith("-guest-nouveau"))
    return {
        "vms": vms, "gpus": 8 * vms, "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "resources": len(result.resources), "depth": depth(result), "reboot_points_per_vm": reboots // vms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    rows = []
    for n in SIZES:
        out = subprocess.run([sys.executable, "-m", "tools.bench", "--one", str(n)], cwd=ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| VMs | GPUs | evaluation (s) | s per VM | peak RSS (MiB) | resources | dependency depth | reboot points per VM |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['vms']} | {r['gpus']} | {r['seconds']} | {r['seconds'] / r['vms']:.2f} | {r['peak_rss_mib']} | "
              f"{r['resources']} | {r['depth']} | {r['reboot_points_per_vm']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
