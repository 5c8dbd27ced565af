"""NvidiaRuntime (guest half): the container runtime with the NVIDIA toolkit on one VM.

containerd gets an `nvidia` runtime that pods select through a RuntimeClass
(the default runtime only when guest.containerRuntime.nvidiaDefault is set);
docker gets nvidia as its default runtime, as seed 001 did. The Kubernetes
half (the RuntimeClass object) belongs to the add-ons.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.guest_command import GuestConnection, phase_command
from render.guest_scripts import Phase

RUNTIME_HANDLER = "nvidia"


@dataclass(frozen=True)
class NvidiaRuntimeArgs:
    phase: Phase
    script: pulumi.Input[str]
    triggers: pulumi.Input[list]
    connection: GuestConnection
    after: list[pulumi.Resource]
    registry_password: pulumi.Output[str] | None = None


class NvidiaRuntime(pulumi.ComponentResource):
    command: pulumi.Resource

    def __init__(self, name: str, args: NvidiaRuntimeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:NvidiaRuntime", name, None, opts)
        stdin = args.registry_password.apply(lambda p: p + "\n") if args.registry_password is not None else None
        self.command = phase_command(
            f"{name}-container-runtime", args.phase, args.script, args.triggers,
            args.connection, self, args.after, stdin,
        )
        self.runtime = args.phase.params["GS_RUNTIME"]
        self.handler = RUNTIME_HANDLER
        self.register_outputs({"runtime": self.runtime, "handler": self.handler})
