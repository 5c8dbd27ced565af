"""NodeUpgrade: one node's upgrade path, as commands that run only when a version changes.

Wiring only (render/guest_scripts.upgrade_phases has the phases, stacks/compose
the waves). Every command has no `create` (nothing runs or connects when the
stack is first built) and the phase script as `update`, so Pulumi runs it only
when its triggers change: the node's own steps (driver, runtime, kubernetes)
re-run when their scripts change, and check, drain, reboot, verify and
uncordon re-run with any of them. A re-run is not a rollout: upgrade-check
decides from the node's own versions whether anything changes, and on "none"
the other phases change nothing (a gpu-stack release alone drains no node;
docs/OPERATIONS.md, Upgrading gpu-stack itself). drain and uncordon run kubectl on the
stack's first VM; the rest on the node. `after` holds the previous wave's
`done`, so the engine itself runs the waves.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.guest_command import GuestConnection, phase_command, stdin_line
from render.guest_scripts import ON_CONTROL_PLANE, Phase, render_script, upgrade_triggers


@dataclass(frozen=True)
class NodeUpgradeArgs:
    node_name: str
    """Command names are <node_name>-<phase>: gpu-1-0-drain, gpu-1-0-upgrade-driver, ..."""
    phases: list[Phase]
    node: GuestConnection
    control_plane: GuestConnection | None
    """Where drain and uncordon run (the stack's first VM); None when the phases have none."""
    after: list[pulumi.Resource]
    """The node's bootstrap (its last phase) and the previous wave's `done`."""
    secrets: dict[str, pulumi.Output[str] | None]
    """stdin values by Phase.stdin_secret: joinToken, registryPassword, kubeconfig."""


class NodeUpgrade(pulumi.ComponentResource):
    done: pulumi.Resource
    verify_stdout: pulumi.Output[str]
    commands: dict[str, command.remote.Command]

    def __init__(self, name: str, args: NodeUpgradeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:NodeUpgrade", name, None, opts)
        scripts = {p.name: render_script(p.name, p.params) for p in args.phases}
        previous = list(args.after)
        self.commands = {}
        for phase in args.phases:
            stdin = None
            if phase.stdin_secret is not None:
                value = args.secrets.get(phase.stdin_secret)
                if value is None:
                    raise ValueError(f"{name}: phase {phase.name} needs {phase.stdin_secret}")
                stdin = stdin_line(value)
            conn = args.control_plane if phase.name in ON_CONTROL_PLANE else args.node
            if conn is None:
                raise ValueError(f"{name}: phase {phase.name} runs on the control plane, which is not given")
            cmd = phase_command(f"{args.node_name}-{phase.name}", phase, scripts[phase.name], upgrade_triggers(phase.name, scripts),
                                conn, self, previous, stdin, update_only=True)
            self.commands[phase.name] = cmd
            previous = [cmd]
        self.done = previous[-1]
        self.verify_stdout = self.commands["upgrade-verify"].stdout
        self.register_outputs({})
