"""GpuGuestBootstrap: a VM from first boot to a GPU-ready Kubernetes node, over SSH.

One remote command per phase (render/guest_scripts.py), chained one after
another because they share the package manager's lock. Wiring only: script
text, parameters, triggers and the output parsers are rendered elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.guest_command import GuestConnection, connection_args, phase_command
from components.nvidia_runtime import NvidiaRuntime, NvidiaRuntimeArgs
from render.guest_scripts import LOGICAL_DEPS, Phase, render_script, ssh_command, teardown_script, triggers
from render.identity import split_kubeconfig_output
from render.nvidia_smi import parse_verify_output
from stacks.config import Vm


@dataclass(frozen=True)
class GpuGuestBootstrapArgs:
    vm: Vm
    phases: list[Phase]
    connection: GuestConnection
    after: list[pulumi.Resource]
    """What must exist first: the VM component."""
    join_token: pulumi.Output[str] | None = None
    registry_password: pulumi.Output[str] | None = None
    late_params: dict[str, pulumi.Output[str]] | None = None
    """Values for the phases' late_params (join endpoint and CA hash of this stack's init VM)."""


class GpuGuestBootstrap(pulumi.ComponentResource):
    kubeconfig: pulumi.Output[str] | None
    ca_cert_hash: pulumi.Output[str] | None
    gpu_inventory: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: GpuGuestBootstrapArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:GpuGuestBootstrap", name, None, opts)
        late = args.late_params or {}
        # plain text where the config decides it all; an Output only for a phase with late params
        scripts: dict[str, str | pulumi.Output[str]] = {}
        for phase in args.phases:
            if phase.late_params:
                values = [late[k] for k in phase.late_params]
                scripts[phase.name] = pulumi.Output.all(*values).apply(
                    lambda vals, p=phase: render_script(p.name, {**p.params, **dict(zip(p.late_params, vals))})
                )
            else:
                scripts[phase.name] = render_script(phase.name, phase.params)

        previous: list[pulumi.Resource] = list(args.after)
        commands: dict[str, command.remote.Command] = {}
        for phase in args.phases:
            # only this phase's script and those it checks: a joining VM's early phases
            # must not wait for the control plane's outputs
            needed = {n: scripts[n] for n in (phase.name, *LOGICAL_DEPS.get(phase.name, ())) if n in scripts}
            if all(isinstance(text, str) for text in needed.values()):
                phase_triggers = triggers(phase.name, needed)
            else:
                phase_triggers = pulumi.Output.all(**needed).apply(lambda ss, n=phase.name: triggers(n, ss))
            if phase.name == "container-runtime":
                runtime = NvidiaRuntime(
                    f"{name}-nvidia-runtime",
                    NvidiaRuntimeArgs(phase, scripts[phase.name], phase_triggers, args.connection, previous, args.registry_password),
                    pulumi.ResourceOptions(parent=self),
                )
                cmd = runtime.command
            else:
                stdin = None
                if phase.stdin_secret == "joinToken":
                    if args.join_token is None:
                        raise ValueError(f"{name}: phase {phase.name} needs a join token")
                    stdin = args.join_token.apply(lambda t: t + "\n")
                cmd = phase_command(f"{name}-{phase.name}", phase, scripts[phase.name], phase_triggers, args.connection, self, previous, stdin)
            commands[phase.name] = cmd
            previous = [cmd]

        if "kubernetes" in commands:
            command.remote.Command(
                f"{name}-kubernetes-teardown",
                connection=connection_args(args.connection, waits_for_boot=False),
                create="true",
                delete=ssh_command(teardown_script(args.vm)),
                logging=command.remote.Logging.STDOUT_AND_STDERR,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[commands["kubernetes"]]),
            )

        self.kubeconfig = None
        self.ca_cert_hash = None
        if "kubeconfig" in commands:
            parts = commands["kubeconfig"].stdout.apply(split_kubeconfig_output)
            self.kubeconfig = pulumi.Output.secret(parts.apply(lambda p: p[0]))
            self.ca_cert_hash = pulumi.Output.unsecret(parts.apply(lambda p: p[1]))
        self.gpu_inventory = commands["verify"].stdout.apply(parse_verify_output)
        self.ready = commands["verify"]
        self.register_outputs({
            "gpuInventory": self.gpu_inventory,
            **({"kubeconfig": self.kubeconfig, "caCertHash": self.ca_cert_hash} if self.kubeconfig is not None else {}),
        })

