"""The NVIDIA container runtime, both halves.

NvidiaRuntime (guest half, one per VM): the container runtime with the NVIDIA
toolkit. containerd gets an `nvidia` runtime that pods select through a
RuntimeClass (the default runtime only when guest.containerRuntime.nvidiaDefault
is set); docker gets nvidia as its default runtime, as seed 001 did.

NvidiaRuntimeClass (Kubernetes half, one per cluster): the RuntimeClass that
names that handler. The GPU Operator creates its own, so this one is only
applied on the device plugin path.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

import pulumi_kubernetes as k8s

from components.guest_command import GuestConnection, phase_command, stdin_line
from render.guest_scripts import Phase
from render.k8s_manifests import runtime_class

RUNTIME_HANDLER = "nvidia"


@dataclass(frozen=True)
class NvidiaRuntimeArgs:
    phase: Phase
    script: pulumi.Input[str]
    triggers: pulumi.Input[list]
    connection: GuestConnection
    after: list[pulumi.Resource]
    registry_password: pulumi.Output[str] | None = None
    update_script: pulumi.Input[str] | None = None
    """Run instead of `script` when the inputs change (the version gate, render/guest_scripts.gate_script)."""


class NvidiaRuntime(pulumi.ComponentResource):
    command: pulumi.Resource

    def __init__(self, name: str, args: NvidiaRuntimeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:NvidiaRuntime", name, None, opts)
        stdin = stdin_line(args.registry_password) if args.registry_password is not None else None
        self.command = phase_command(
            f"{name}-container-runtime", args.phase, args.script, args.triggers,
            args.connection, self, args.after, stdin, update=args.update_script,
        )
        self.runtime = args.phase.params["GS_RUNTIME"]
        self.handler = RUNTIME_HANDLER
        self.register_outputs({"runtime": self.runtime, "handler": self.handler})


class NvidiaRuntimeClass(pulumi.ComponentResource):
    def __init__(self, name: str, provider: k8s.Provider, after: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None,
                 node_selector: dict[str, str] | None = None):
        super().__init__("gpu-stack:index:NvidiaRuntimeClass", name, None, opts)
        self.objects = k8s.yaml.v2.ConfigGroup(
            f"{name}-objects", objs=[runtime_class(node_selector)],
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=after),
        )
        self.handler = RUNTIME_HANDLER
        self.register_outputs({"handler": self.handler})
