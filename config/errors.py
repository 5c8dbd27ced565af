"""Config errors that name the exact key, so a user can find the line to fix."""

from __future__ import annotations

from dataclasses import dataclass

from pulumi.errors import RunError

PREFIX = "gpu-stack"


@dataclass(frozen=True)
class ConfigIssue:
    path: str  # e.g. "vms[0].gpus[1].address"
    message: str

    def __str__(self) -> str:
        return f"{PREFIX}:{self.path}: {self.message}"


class ConfigError(RunError):
    """Raised before any resource is registered; lists every problem found.

    A pulumi.RunError, so `pulumi preview`/`up` print the problems and exit
    without a Python traceback.
    """

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"invalid stack config ({len(issues)} problem{'s' if len(issues) != 1 else ''}):\n{lines}")


def loc_to_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a mapping key (the part before names it)
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (str(part) if part != "" else '""')
    return out
