"""BurnInGate: at the first deploy, after the readiness gate, each GPU node burns in before it takes work.

Wiring only: render/burnin_gate.burnin_phase has the phase (scripts/guest/burn-in.sh, run with kubectl on the
stack's first VM), render/burnin parses what it printed into the `burnIn` stack output. One command per node,
the nodes side by side. The command runs on create only: a later change of its script does not burn a node in
again while it carries work (an upgrade wave does, between upgrade-verify and uncordon: NodeUpgrade).
A failure fails the deployment and leaves that node cordoned.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.guest_command import GuestConnection, phase_command, stdin_line
from render.guest_scripts import Phase, render_script


@dataclass(frozen=True)
class BurnInGateArgs:
    phases: dict[str, Phase]
    """Node -> its burn-in phase (mode deploy)."""
    connection: GuestConnection
    after: list[pulumi.Resource]
    """The readiness gate."""
    kubeconfig: pulumi.Output[str] | None = None


class BurnInGate(pulumi.ComponentResource):
    stdout: dict[str, pulumi.Output[str]]
    commands: dict[str, command.remote.Command]

    def __init__(self, name: str, args: BurnInGateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:BurnInGate", name, None, opts)
        stdin = stdin_line(args.kubeconfig) if args.kubeconfig is not None else None
        self.commands = {}
        for node, phase in sorted(args.phases.items()):
            script = render_script(phase.name, phase.params)
            self.commands[node] = phase_command(f"{name}-{node}", phase, script, [f"burn-in:{node}"], args.connection, self,
                                                args.after, stdin, update="true")
        self.stdout = {node: cmd.stdout for node, cmd in self.commands.items()}
        self.register_outputs({})
