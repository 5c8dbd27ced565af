"""Read `gpu-stack:*` from the running Pulumi program into a validated StackConfig.

Secrets stay Pulumi Outputs marked secret from here to the resource that
consumes them; only their presence is checked at load time.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, ValidationError

from render.numa import Placement
from stacks.checks import check_stack
from stacks.config import REMOVED_KEYS, SECRET_KEYS, StackConfig
from stacks.errors import PREFIX, ConfigError, ConfigIssue, loc_to_path


@dataclass(frozen=True)
class LoadedStack:
    config: StackConfig
    secrets: dict[str, pulumi.Output[str]]
    placements: dict[str, Placement]


def _config_keys() -> dict[str, Any]:
    """Every `gpu-stack:` key the engine handed this program, with its raw value."""
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {k.split(":", 1)[1]: v for k, v in merged.items() if k.startswith(f"{PREFIX}:")}


def decode_config_value(value: Any) -> Any:
    """The engine hands structured config over as JSON text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Accepted keys of the model that holds `loc`, for 'unknown key' errors."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validation_issues(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for e in error.errors():
        loc = tuple(e["loc"])
        path = loc_to_path(loc)
        if e["type"] == "extra_forbidden":
            accepted = _fields_at(StackConfig, loc)
            msg = "unknown key" + (f"; accepted here: {', '.join(accepted)}" if accepted else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], (dict, list)):
                msg += f" (got {e['input']!r})"
        issues.append(ConfigIssue(path, msg))
    return issues


def _removed_keys(plain: dict[str, Any]) -> tuple[list[ConfigIssue], dict[str, Any]]:
    """Issues for keys that were removed (REMOVED_KEYS), and the config without them."""
    issues = []
    for path, message in REMOVED_KEYS.items():
        parent: Any = plain
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            issues.append(ConfigIssue(".".join(path), message))
            plain = _without(plain, path)
    return issues, plain


def _without(tree: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    head, *rest = path
    if not rest:
        return {k: v for k, v in tree.items() if k != head}
    return {**tree, head: _without(tree[head], tuple(rest))}


def parse_stack_config(raw: dict[str, Any], secret_names: set[str]) -> tuple[StackConfig, dict[str, Placement]]:
    """Validate plain config; raise ConfigError naming every bad key. No Pulumi needed."""
    accepted = {f.alias for f in StackConfig.model_fields.values()} | set(SECRET_KEYS)
    issues = [
        ConfigIssue(key, f"unknown key; accepted: {', '.join(sorted(accepted))}")
        for key in sorted(raw)
        if key not in accepted
    ]
    plain = {k: v for k, v in raw.items() if k in accepted and k not in SECRET_KEYS}
    removed, plain = _removed_keys(plain)
    issues += removed
    try:
        cfg = StackConfig.model_validate(plain)
    except ValidationError as e:
        raise ConfigError(issues + validation_issues(e)) from None
    more, placements = check_stack(cfg, secret_names)
    if issues or more:
        raise ConfigError(issues + more)
    return cfg, placements


def load_stack() -> LoadedStack:
    raw = {k: decode_config_value(v) for k, v in _config_keys().items()}
    present = {k for k in SECRET_KEYS if raw.get(k) not in (None, "")}
    plain_text = [k for k in sorted(present) if not runtime_config.is_config_secret(f"{PREFIX}:{k}")]
    if plain_text:
        raise ConfigError([
            ConfigIssue(k, f"is stored in plain text in the stack file; remove it and run `pulumi config set --secret {PREFIX}:{k}`")
            for k in plain_text
        ])
    cfg, placements = parse_stack_config(raw, present)
    conf = pulumi.Config(PREFIX)
    secrets = {k: conf.require_secret(k) for k in sorted(present)}
    return LoadedStack(cfg, secrets, placements)
