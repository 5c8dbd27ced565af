"""Read `gpu-stack:*` from the running Pulumi program into a validated StackConfig.

Secrets stay Pulumi Outputs marked secret from here to the resource that
consumes them; only their presence is checked at load time.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, ValidationError

from render.numa import Placement
from config import stackfile
from stacks.checks import check_stack
from config.models import REMOVED_KEYS, SECRET_KEYS, StackConfig
from config.errors import PREFIX, ConfigError, ConfigIssue, loc_to_path


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


STACK_FILE_KEYS = ("config", "encryptionsalt", "secretsprovider", "encryptedkey", "environment")
"""Top-level keys of a Pulumi.<stack>.yaml (Pulumi's ProjectStack); others are named when `config:` is missing."""

FILE_KEY = "(file)"
"""Key of problems with the stack file itself (not UTF-8, not YAML, not a mapping)."""


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", type(None): "empty value", bool: "boolean", int: "number", float: "number"}.get(type(value), type(value).__name__)


class StackFileConfig(dict):
    """`config:` of a stack file as the CLI hands it to the program (config.stackfile.engine_value), and
    `written`: config path (as ConfigIssue.path, e.g. "kubernetes.version") -> the text as written, for
    each plain scalar of a `gpu-stack:` key that YAML reads as something other than that text."""

    written: dict[str, str]

    def __init__(self, values: dict[str, Any], written: dict[str, str] | None = None):
        super().__init__(values)
        self.written = written or {}


def parse_stack_text(text: str, name: str) -> StackFileConfig:
    """`config:` of a stack file's text, read as the Pulumi CLI reads it (config/stackfile.py)."""
    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(FILE_KEY, f"{name}: {message}")])

    try:
        read = stackfile.parse(text)
    except stackfile.StackFileError as e:
        where = f"line {e.line}: " if e.line is not None else ""
        lines = text.splitlines()
        at = lines[e.line - 1] if e.line is not None and 0 < e.line <= len(lines) else ""
        hint = ("; YAML indents with spaces, never tabs" if "cannot start any token" in e.message and "\t" in at
                else "; each key may appear once in a mapping (the Pulumi CLI refuses the file too)" if "already defined" in e.message
                else "" if "quote it" in e.message else "; the file must be valid YAML")
        raise fail(f"{where}{e.message}{hint}") from None
    except RecursionError:
        raise fail("is nested too deeply to be a stack file") from None
    doc = read.value
    if doc is None:
        return StackFileConfig({})
    if not isinstance(doc, dict):
        raise fail(f"holds a {_type_name(doc)}, not a mapping; a stack file is a mapping with a `config:` key holding gpu-stack:<key>: <value> entries")
    unknown = sorted(str(k) for k in doc if k not in STACK_FILE_KEYS)
    if unknown and not doc.get("config"):
        # Pulumi ignores unknown top-level keys; without config the stack is refused anyway, so say why
        raise fail(f"unknown top-level key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; a stack file has {', '.join(STACK_FILE_KEYS)}")
    config = doc.get("config")
    if config is None or config == "":
        return StackFileConfig({})
    if not isinstance(config, dict):
        raise fail(f"`config:` is a {_type_name(config)}; expected a mapping of gpu-stack:<key>: <value> entries")
    ours = f"{PREFIX}:"
    written = {
        loc_to_path((path[1].removeprefix(ours), *path[2:])): text
        for path, text in read.written.items()
        if len(path) >= 2 and path[0] == "config" and isinstance(path[1], str) and path[1].startswith(ours)
    }
    return StackFileConfig({k: stackfile.engine_value(v) for k, v in config.items()}, written)


def read_stack_file(path: Path) -> StackFileConfig:
    """`config:` of a Pulumi.<stack>.yaml, as the CLI hands it to the program; ConfigError naming the file otherwise."""
    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(FILE_KEY, f"{path.name}: {message}")])

    try:
        data = path.read_bytes()
    except OSError as e:
        raise fail(f"cannot be read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise fail(f"is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} (offset {e.start}); save the file as UTF-8") from None
    return parse_stack_text(text, path.name)


def present_secrets(raw: dict[str, Any]) -> set[str]:
    """Secret keys that are set (an empty value counts as unset)."""
    return {k for k in SECRET_KEYS if raw.get(k) not in (None, "")}


def plaintext_secret_issues(raw: dict[str, Any], is_secret: Callable[[str], bool]) -> list[ConfigIssue]:
    """Secret keys stored in plain text; the program and `make plan` refuse them with the same words."""
    return [
        ConfigIssue(k, f"is stored in plain text in the stack file; remove it and run `pulumi config set --secret {PREFIX}:{k}`")
        for k in sorted(present_secrets(raw))
        if not is_secret(k)
    ]


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model that holds the key at `loc` (list indexes skipped)."""
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
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Accepted keys of the model that holds `loc`, for 'unknown key' errors."""
    holder = _model_at(model, loc)
    return sorted(f.alias or n for n, f in holder.model_fields.items()) if holder is not None else None


def _example_at(model: type[BaseModel], loc: tuple) -> str | None:
    """An accepted value for the key at `loc`, for pattern errors: the field's first example, else its string default."""
    holder = _model_at(model, tuple(p for p in loc if not isinstance(p, int)) or loc)
    key = next((p for p in reversed(loc) if not isinstance(p, int)), None)
    if holder is None or key is None:
        return None
    field = next((f for n, f in holder.model_fields.items() if (f.alias or n) == key), None)
    if field is None:
        return None
    if field.examples:
        return str(field.examples[0])
    return field.default if isinstance(field.default, str) else None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _not_text(value: Any, written: str | None) -> str | None:
    """For a number or boolean where text is expected: the file's text, what YAML made of it, and to quote it."""
    if not isinstance(value, (bool, int, float)):
        return None
    text = written if written is not None else (("true" if value else "false") if isinstance(value, bool) else stackfile.go_json_number(value))
    kind = "a boolean" if isinstance(value, bool) else "a number"
    return f"the stack file's {text} is read by YAML as {kind}, not text: quote it, \"{text}\""


TEXT_EXPECTED = ("string_type", "literal_error", "enum", "string_pattern_mismatch")


def validation_issues(error: ValidationError, written: dict[str, str] | None = None) -> list[ConfigIssue]:
    """One issue per pydantic error; `written` (StackFileConfig.written) gives the text as written of a
    scalar YAML read as a number or boolean, for the message where text was expected."""
    written = written or {}
    issues = []
    for e in error.errors():
        loc = tuple(e["loc"])
        path = loc_to_path(loc)
        quote = _not_text(e.get("input"), written.get(path)) if e["type"] in TEXT_EXPECTED else None
        if quote is not None:
            example = _example_at(StackConfig, loc)
            msg = e["msg"].removeprefix("Value error, ") + "; " + quote + (f" (for example {example!r})" if example else "")
        elif e["type"] == "extra_forbidden":
            accepted = _fields_at(StackConfig, loc)
            msg = "unknown key" + (f"; accepted here: {', '.join(accepted)}" if accepted else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "string_pattern_mismatch":
            example = _example_at(StackConfig, loc)
            msg = (f"{e['input']!r} is not in the accepted form {e['ctx']['pattern']}"
                   + (f", for example {example!r}" if example else ""))
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


def parse_stack_config(raw: dict[str, Any], secret_names: Iterable[str], stack: str | None = None,
                       written: dict[str, str] | None = None) -> tuple[StackConfig, dict[str, Placement]]:
    """Validate plain config; raise ConfigError naming every bad key. No Pulumi needed.

    `stack` (the Pulumi stack name) enables the checks that need it (fixed MACs against derived ones).
    `written` (StackFileConfig.written) lets a message show a value's text as the file has it.
    """
    secret_names = set(secret_names)
    accepted = {f.alias for f in StackConfig.model_fields.values()} | set(SECRET_KEYS)
    issues = [
        ConfigIssue(loc_to_path((key,)), f"unknown key; accepted: {', '.join(sorted(accepted))}")
        for key in sorted(raw)
        if key not in accepted
    ]
    plain = {k: v for k, v in raw.items() if k in accepted and k not in SECRET_KEYS}
    removed, plain = _removed_keys(plain)
    issues += removed
    try:
        cfg = StackConfig.model_validate(plain)
    except ValidationError as e:
        raise ConfigError(issues + validation_issues(e, written)) from None
    more, placements = check_stack(cfg, secret_names, stack)
    if issues or more:
        raise ConfigError(issues + more)
    return cfg, placements


def load_stack() -> LoadedStack:
    raw = {k: decode_config_value(v) for k, v in _config_keys().items()}
    plain_text = plaintext_secret_issues(raw, lambda k: runtime_config.is_config_secret(f"{PREFIX}:{k}"))
    if plain_text:
        raise ConfigError(plain_text)
    present = present_secrets(raw)
    cfg, placements = parse_stack_config(raw, present, pulumi.get_stack())
    conf = pulumi.Config(PREFIX)
    secrets = {k: conf.require_secret(k) for k in sorted(present)}
    return LoadedStack(cfg, secrets, placements)
