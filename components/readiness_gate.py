"""ReadinessGate: after the add-ons, the cluster is checked from the first VM with kubectl.

Nodes Ready, GPU allocatable equal to what the config passes through (times
the time-slicing replicas), the smoke-test Job succeeded: a remote command
running scripts/guest/readiness.sh, whose report becomes the `readiness`
stack output. A failure names the seed 003 diagnosis step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.guest_command import GuestConnection, phase_command, stdin_line
from render.guest_scripts import Phase, digest, render_script
from render.readiness import parse_readiness_output


@dataclass(frozen=True)
class ReadinessGateArgs:
    phase: Phase
    connection: GuestConnection
    after: list[pulumi.Resource]
    """Every add-on release and object group: the gate checks what they converge to."""
    kubeconfig: pulumi.Output[str] | None = None
    """Fed on stdin when the first VM has no admin kubeconfig (mode join)."""


class ReadinessGate(pulumi.ComponentResource):
    report: pulumi.Output[dict]
    command: command.remote.Command

    def __init__(self, name: str, args: ReadinessGateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:ReadinessGate", name, None, opts)
        script = render_script(args.phase.name, args.phase.params)
        stdin = stdin_line(args.kubeconfig) if args.kubeconfig is not None else None
        self.command = phase_command(f"{name}-gate", args.phase, script, [f"readiness:{digest(script)}"],
                                     args.connection, self, args.after, stdin)
        self.report = self.command.stdout.apply(parse_readiness_output)
        self.register_outputs({"report": self.report})
