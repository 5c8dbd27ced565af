"""GpuSmokeTest: a Job that asks for one GPU and runs nvidia-smi.

The readiness gate (components/readiness_gate.py) waits for it and fails the
deployment when a GPU is not actually allocatable and usable: no device
plugin, a missing toleration (seed 001), a broken runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from render.k8s_manifests import smoke_test_job
from config.models import Addons


@dataclass(frozen=True)
class GpuSmokeTestArgs:
    addons: Addons
    runtime_class_name: str | None
    resource: str
    provider: k8s.Provider
    after: list[pulumi.Resource]


class GpuSmokeTest(pulumi.ComponentResource):
    objects: k8s.yaml.v2.ConfigGroup

    def __init__(self, name: str, args: GpuSmokeTestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:GpuSmokeTest", name, None, opts)
        self.objects = k8s.yaml.v2.ConfigGroup(
            f"{name}-objects", objs=smoke_test_job(args.addons, args.runtime_class_name, args.resource),
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.after),
        )
        self.register_outputs({"resource": args.resource})
