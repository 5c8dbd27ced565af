"""What every backend's folder may use besides its own files: the machine a backend creates, and the mock helpers.

A backend folder imports this module and config/, render/, facts/; never another backend's folder
(tests/test_house.py). hypervisors/base.py holds the contract and the table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import grpc
import pulumi


@dataclass
class Machine:
    """What a backend's `create` made under GpuPassthroughVm."""

    id: pulumi.Output[str]
    """The provider's id of the VM (libvirt Domain, vSphere VirtualMachine, KubeVirt VirtualMachine)."""
    ip: pulumi.Output[str | None]
    devices: tuple[str, ...]
    """The devices as this backend names them: PCI functions (libvirt), host device ids (vSphere), resource names (KubeVirt)."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """The backend's own outputs of the component (mmio64Gib, ...)."""
    ssh_port: pulumi.Output[int] | None = None
    """Where the guest's SSH answers, when not on port 22 of `ip` (a KubeVirt NodePort)."""


# --- the mock harness (tools/mockrun.py) ---------------------------------------------


class ProviderInvokeError(grpc.RpcError):
    """An invoke the provider answered with an error, as the real engine hands it to the SDK: a gRPC status
    whose details carry the provider's message (pulumi-libvirt 0.5.4 under the real engine: "invocation of
    TOKEN returned an error: invoking TOKEN: 1 error occurred: * <message>"). The SDK raises it to the caller
    of invoke; a plain exception from a mock would instead be an unhandled RPC failure that ends the program."""

    def __init__(self, token: str, message: str):
        super().__init__(message)
        self._details = f"invocation of {token} returned an error: invoking {token}: 1 error occurred:\n\t* {message}\n\n"

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return self._details


def fake_ip(name: str) -> str:
    """The address a mocked VM reports in update mode."""
    h = hashlib.sha256(name.encode()).digest()
    return f"192.168.122.{10 + h[0] % 200}"


# --- the rollout: what a change of the VM resource's inputs does (hypervisors/base.py vm_replacements) ---


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The top-level inputs that differ between two plans' rows of one resource, sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def may_restart(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The rule of a backend whose plan cannot tell which changes restart the VM: any changed input may."""
    keys = changed_inputs(old, new)
    return f"{', '.join(keys)} changed (may restart the VM; the plan cannot tell)" if keys else None


# --- `make plan` (tools/plan.py): what a backend's plan_files and plan_summary may use -------------------

SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
"""How the engine marks a secret input: {SECRET_SIG_KEY: SECRET_SIG, "value": ...} (pulumi 3.272.0,
sdk/python/lib/pulumi/runtime/rpc.py `_special_sig_key`, `_special_secret_sig`)."""


def unwrap_secret(value: Any) -> Any:
    """A secret input's value (for a backend's plan file to pick out the parts that are not secret); anything else as it is."""
    if isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG:
        return value.get("value")
    return value


@dataclass(frozen=True)
class PlanSummary:
    """A backend's part of `make plan`'s summary on stdout (hypervisors/base.py Hypervisor.plan_summary)."""

    vms: dict[str, str] = field(default_factory=dict)
    """GpuPassthroughVm name -> its line (`  vm <name> (<kind>): ...`); a VM not here gets the neutral line."""
    lines: list[str] = field(default_factory=list)
    """Lines after the add-ons' (hosts checked against facts, expected allocatable)."""
    notes: list[str] = field(default_factory=list)
    """What the offline plan assumed, for the closing `(offline: ...)` line."""
