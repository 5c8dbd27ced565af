"""GpuGuestBootstrap: a VM from first boot to a GPU-ready Kubernetes node, over SSH.

One remote command per phase (render/guest_scripts.py), chained one after
another because they share the package manager's lock. Wiring only: script
text, parameters, triggers and the output parsers are rendered elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.guest_command import GuestConnection, connection_args, phase_command, stdin_line
from components.nvidia_runtime import NvidiaRuntime, NvidiaRuntimeArgs
from render.guest_scripts import CREDENTIALS_SECRET, LOGICAL_DEPS, UPGRADE_MANAGED, Phase, gate_script, render_script, ssh_command, teardown_script, triggers
from render.identity import split_join_token_output, split_kubeconfig_output
from render.verify_output import parse_verify_output
from config.models import Vm


@dataclass(frozen=True)
class JoinTokenSource:
    """Where a joining VM gets its bootstrap token: a command on the control plane (the init VM)."""

    phase: Phase
    """render.guest_scripts.join_token_phase for this VM."""
    connection: GuestConnection
    """The init VM's SSH connection."""
    after: list[pulumi.Resource]
    """The control plane's kubeconfig phase: kubeadm init has run."""
    identity: pulumi.Input[str]
    """The joining VM's domain id: a rebuilt VM gets a fresh token, an unchanged one never does."""


@dataclass(frozen=True)
class GpuGuestBootstrapArgs:
    vm: Vm
    phases: list[Phase]
    connection: GuestConnection
    after: list[pulumi.Resource]
    """What must exist first: the VM component."""
    join_token: pulumi.Output[str] | None = None
    registry_password: pulumi.Output[str] | None = None
    credentials: pulumi.Output[str] | None = None
    """stdin of phase credentials: proxyPassword and repositoryPassword lines (stacks/compose.py guest_credentials)."""
    late_params: dict[str, pulumi.Output[str]] | None = None
    """Values for the phases' late_params (join endpoint and CA hash of this stack's init VM)."""
    join_token_source: JoinTokenSource | None = None
    """Mode init, joining VMs: create a short-lived token on the control plane instead of join_token."""


class GpuGuestBootstrap(pulumi.ComponentResource):
    kubeconfig: pulumi.Output[str] | None
    ca_cert_hash: pulumi.Output[str] | None
    gpu_inventory: pulumi.Output[dict]
    ready: pulumi.Resource

    def _join_token(self, name: str, source: JoinTokenSource, previous: list[pulumi.Resource]) -> pulumi.Output[str]:
        """A remote command on the init VM that creates this VM's bootstrap token (secret stdout).

        It runs right before this VM's join (after its previous phase and the control plane),
        so the TTL starts when the token is needed. Triggers: its script and the VM's domain id,
        never time: an expired token does not re-run anything on a node that has joined.
        """
        script = render_script(source.phase.name, source.phase.params)
        token_triggers = pulumi.Output.all(source.identity).apply(
            lambda ids: [*triggers(source.phase.name, {source.phase.name: script}), f"vm:{ids[0]}"]
        )
        cmd = phase_command(f"{name}-{source.phase.name}", source.phase, script, token_triggers, source.connection,
                            self, [*previous, *source.after])
        return pulumi.Output.secret(cmd.stdout.apply(split_join_token_output))

    def __init__(self, name: str, args: GpuGuestBootstrapArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-stack:index:GpuGuestBootstrap", name, None, opts)
        late = args.late_params or {}
        # plain text where the config decides it all; an Output only for a phase with late params
        scripts: dict[str, str | pulumi.Output[str]] = {}
        updates: dict[str, str | pulumi.Output[str]] = {}
        for phase in args.phases:
            renderers = [(scripts, render_script)] + ([(updates, gate_script)] if phase.name in UPGRADE_MANAGED else [])
            for target, render in renderers:
                if phase.late_params:
                    values = [late[k] for k in phase.late_params]
                    target[phase.name] = pulumi.Output.all(*values).apply(
                        lambda vals, p=phase, r=render: r(p.name, {**p.params, **dict(zip(p.late_params, vals))})
                    )
                else:
                    target[phase.name] = render(phase.name, phase.params)

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
                    NvidiaRuntimeArgs(phase, scripts[phase.name], phase_triggers, args.connection, previous, args.registry_password,
                                      updates.get(phase.name)),
                    pulumi.ResourceOptions(parent=self),
                )
                cmd = runtime.command
            else:
                stdin = None
                if phase.stdin_secret == CREDENTIALS_SECRET:
                    if args.credentials is None:
                        raise ValueError(f"{name}: phase {phase.name} needs the proxy or mirror passwords")
                    stdin = args.credentials
                if phase.stdin_secret == "joinToken":
                    token = args.join_token
                    if args.join_token_source is not None:
                        token = self._join_token(name, args.join_token_source, previous)
                    if token is None:
                        raise ValueError(f"{name}: phase {phase.name} needs a join token")
                    stdin = stdin_line(token)
                cmd = phase_command(f"{name}-{phase.name}", phase, scripts[phase.name], phase_triggers, args.connection, self, previous, stdin,
                                    update=updates.get(phase.name))
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
        self.control_plane = commands.get("kubeconfig")
        if "kubeconfig" in commands:
            parts = commands["kubeconfig"].stdout.apply(split_kubeconfig_output)
            self.kubeconfig = pulumi.Output.secret(parts.apply(lambda p: p[0]))
            self.ca_cert_hash = pulumi.Output.unsecret(parts.apply(lambda p: p[1]))
        self.verify_stdout = commands["verify"].stdout
        self.gpu_inventory = self.verify_stdout.apply(parse_verify_output)
        self.ready = commands["verify"]
        self.register_outputs({
            "gpuInventory": self.gpu_inventory,
            **({"kubeconfig": self.kubeconfig, "caCertHash": self.ca_cert_hash} if self.kubeconfig is not None else {}),
        })

