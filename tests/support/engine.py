"""One engine operation for tests/engine/ (run through tools.engine.isolated, in a process of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.engine import Outcome, workspace


def operate(stack: str, bin_dir: str, op: str = "preview", *, secrets: dict[str, str] | None = None,
            config_overrides: dict[str, Any] | None = None, libvirt_uri: str | None = None,
            host_facts: list[str] | None = None, **op_args: Any) -> Outcome:
    """One automation-API operation (`preview`, `up`, ...) on a fresh throwaway stack."""
    from pulumi import automation as auto

    events: list[Any] = []
    with workspace(stack, Path(bin_dir), secrets=secrets, config_overrides=config_overrides, libvirt_uri=libvirt_uri,
                   host_facts=host_facts) as ws:
        try:
            result = getattr(ws.stack, op)(color="never", on_event=events.append, **op_args)
            ok, stdout, error = True, result.stdout, ""
        except auto.errors.CommandError as e:
            text = str(e)
            ok, stdout, error = False, text.split(" stdout: ", 1)[-1].rsplit(" stderr: ", 1)[0], text.rsplit(" stderr: ", 1)[-1]
    return Outcome(
        ok, stdout, error,
        [e.resource_pre_event.metadata.type for e in events if e.resource_pre_event],
        [(e.diagnostic_event.severity, e.diagnostic_event.message) for e in events if e.diagnostic_event],
    )
