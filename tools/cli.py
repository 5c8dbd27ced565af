"""Command-line mistakes as one line naming the argument, exit status 2 (issue 23: no tracebacks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn


class UsageError(Exception):
    """A command-line argument that cannot be used; its text names the argument."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (--help lists the arguments)\n")
        sys.exit(2)


def read_text(path: str, arg: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"{arg} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{arg} {path}: is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{arg} {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None


def read_json_object(path: str, arg: str, what: str) -> dict[str, Any]:
    """A file holding one JSON object; UsageError naming `arg` otherwise. `what` says how to make it."""
    try:
        text = read_text(path, arg)
    except UsageError as e:
        raise UsageError(f"{e}; expected {what}") from None
    if not text.strip():
        raise UsageError(f"{arg} {path}: the file is empty; expected {what}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{arg} {path}: not JSON (line {e.lineno} column {e.colno}: {e.msg}); expected {what}") from None
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(type(value), "a number")
        raise UsageError(f"{arg} {path}: holds {kind}, not a JSON object; expected {what}")
    return value


def writable_dir(path: str, arg: str) -> Path:
    """A directory that exists or can be made; UsageError naming `arg` otherwise."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{arg} {path}: is a file, not a directory; name a directory (default build/plan)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{arg} {path}: cannot make this directory ({e.strerror})") from None
    return out
