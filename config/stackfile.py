"""Read a Pulumi.<stack>.yaml as the Pulumi CLI reads it.

The CLI reads a stack file with Go's gopkg.in/yaml.v3 (pulumi sdk/v3 go/common/encoding/marshal.go) into
its config objects (sdk/v3 go/common/resource/config/object.go, unmarshalObject), and hands each
`namespace:key` to the program as a string: a string as it is, any other scalar as its JSON text, a
list or mapping as JSON text (`pulumi config --json` shows that string as `value`, and a structured
one parsed again as `objectValue`).

Parsing (anchors and aliases, block scalars, where a tab may stand, errors with a line) is libyaml's,
through PyYAML's C binding: yaml.v3 is a Go port of libyaml's scanner and parser, and gives the same
errors ("found character that cannot start any token"). ruamel.yaml (a YAML 1.2 parser) was tried and
refuses what the CLI reads: a tab inside a line (`key: a<TAB>b`, `key: x<TAB># comment`). Deciding what a plain scalar is, is yaml.v3's own resolver, which is not the
YAML 1.2 core schema (`017` is octal 15, `08` the float 8, `1_000` is 1000, `0b101` is 5, a date is a
timestamp), so `_resolve` follows gopkg.in/yaml.v3 v3.0.1 resolve.go (func resolve, parseTimestamp)
line by line. Duplicate keys are refused as yaml.v3's decoder.go (func d.mapping, uniqueKeys) refuses
them: same kind and same text, with both lines. Merge keys (`<<`) follow decoder.go d.merge: the
mapping's own keys win, and of merged mappings the earlier one wins.
tests/engine/test_yaml_parity.py compares this reader with the real CLI on a table of edge cases.
"""

from __future__ import annotations

import calendar
import math
import re
from decimal import Decimal
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

PLAIN = "tag:gpu-stack,2026:plain"
"""The tag this reader gives a plain (unquoted, untagged) scalar, which _resolve then reads as yaml.v3 does."""


try:
    from yaml.cyaml import CParser
except ImportError:  # pragma: no cover - PyYAML's wheels bundle libyaml
    raise ImportError("PyYAML without libyaml: config/stackfile.py needs yaml.CParser (reinstall PyYAML from its wheel)") from None


class _Loader(CParser, yaml.resolver.BaseResolver):
    """libyaml's parser and composer; plain scalars left unresolved (tag PLAIN), since BaseResolver has no
    implicit resolvers and resolve() below marks them; quoted, block and tagged scalars keep their tag."""

    def __init__(self, stream: str):
        CParser.__init__(self, stream)
        yaml.resolver.BaseResolver.__init__(self)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            return PLAIN
        return super().resolve(kind, value, implicit)


class StackFileError(Exception):
    """The file is not what the CLI would read; `line` (1-based) where known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Read:
    value: Any
    written: dict[tuple, str] = field(default_factory=dict)
    """Path (keys and list indexes) -> the text as written, for plain scalars that are not strings."""


# yaml.v3 resolve.go: resolveTable and resolveMap
_BOOL_NULL: dict[str, Any] = {
    **{s: True for s in ("true", "True", "TRUE")},
    **{s: False for s in ("false", "False", "FALSE")},
    **{s: None for s in ("", "~", "null", "Null", "NULL")},
    **{s: math.nan for s in (".nan", ".NaN", ".NAN")},
    **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")},
}
_YAML_STYLE_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (1 << 64) - 1


def _go_parse_int(s: str, signed: bool) -> int | None:
    """strconv.ParseInt(s, 0, 64) (signed) or strconv.ParseUint(s, 0, 64): base from the prefix, a lone
    leading 0 meaning octal."""
    sign = 1
    body = s
    if signed and body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    base, digits = 10, body
    low = body[:2].lower()
    if low in ("0x", "0o", "0b"):
        base, digits = {"0x": 16, "0o": 8, "0b": 2}[low], body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, digits = 8, body[1:]
    if not digits or any(c not in _DIGITS[base] for c in digits):
        return None
    value = sign * int(digits, base)
    if signed:
        return value if _INT64[0] <= value <= _INT64[1] else None
    return value if value <= _UINT64 else None


_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:(?:[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d+)?(Z|[+-]\d{2}:\d{2}))|(?: (\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d+)?))?$"
)


def _timestamp(s: str) -> str | None:
    """parseTimestamp's layouts; the value as Pulumi keeps it: Go's time.Time.String() (object.go: v.String())."""
    m = _TIMESTAMP.match(s)
    if m is None:
        return None
    y, mo, d = int(m[1]), int(m[2]), int(m[3])
    if m[4] is not None:
        hh, mi, ss, frac, zone = int(m[4]), int(m[5]), int(m[6]), m[7], m[8]
    elif m[9] is not None:
        hh, mi, ss, frac, zone = int(m[9]), int(m[10]), int(m[11]), m[12], "Z"
    else:
        hh, mi, ss, frac, zone = 0, 0, 0, None, "Z"
    if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and hh < 24 and mi < 60 and ss < 60):
        return None
    text = f"{y:04d}-{mo:02d}-{d:02d} {hh:02d}:{mi:02d}:{ss:02d}"
    digits = (frac or "")[1:10].rstrip("0")
    if digits:
        text += "." + digits
    if zone == "Z":
        return text + " +0000 UTC"
    offset = zone.replace(":", "")
    return f"{text} {offset} {offset}"


def _resolve(text: str) -> Any:
    """A plain scalar as yaml.v3 v3.0.1 resolve.go reads it (timestamps as Pulumi keeps them)."""
    hint = text[0] if text else ""
    if text in _BOOL_NULL:
        return _BOOL_NULL[text]
    if hint == "." and _GO_FLOAT.match(text):  # strconv.ParseFloat(in, 64)
        return float(text)
    if hint.isdigit() and hint.isascii() or hint in ("+", "-"):
        stamp = _timestamp(text)
        if stamp is not None:
            return stamp
        plain = text.replace("_", "")
        for signed in (True, False):
            value = _go_parse_int(plain, signed)
            if value is not None:
                return value
        if _YAML_STYLE_FLOAT.match(plain):
            return float(plain)
        # yaml.v3's own 0b/0o branches add nothing here: ParseInt with base 0 reads both prefixes
    return text


def go_json_number(value: float | int) -> str:
    """A number as Go's encoding/json writes it (encode.go floatEncoder: 'f' format, 'e' below 1e-6 and
    from 1e21, e-07 cleaned to e-7): the CLI's text of a scalar number."""
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        return format(Decimal(repr(value)), "f").removesuffix(".0")
    text = repr(value)
    return re.sub(r"e-0(\d)$", r"e-\1", text)


def _where(node: Node) -> int:
    return node.start_mark.line + 1


class _Reader:
    def __init__(self) -> None:
        self.written: dict[tuple, str] = {}
        self.duplicates: list[tuple[int, str]] = []

    def value(self, node: Node, path: tuple, depth: int = 0) -> Any:
        if depth > 200:
            raise RecursionError
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            return [self.value(n, (*path, i), depth + 1) for i, n in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth)
        raise StackFileError(f"unexpected YAML node {type(node).__name__}", _where(node))

    def scalar(self, node: ScalarNode, path: tuple) -> Any:
        tag = node.tag
        if tag != PLAIN:
            # quoted or block scalars are strings; an explicit tag is read as yaml.v3 reads it untagged,
            # except !!str (a string whatever it looks like)
            if node.style is not None or tag.endswith(":str"):
                return node.value
            if not tag.startswith("tag:yaml.org,2002:"):
                return node.value  # a local tag (!foo): yaml.v3 keeps the text
        value = _resolve(node.value)
        if not isinstance(value, str) or value != node.value:
            if isinstance(value, float) and not math.isfinite(value):
                raise StackFileError(f"{node.value} (at {_dotted(path)}) is a number the Pulumi CLI cannot store "
                                     f"(it refuses the file: json: unsupported value); quote it: \"{node.value}\"", _where(node))
            self.written[path] = node.value
        return value

    def mapping(self, node: MappingNode, path: tuple, depth: int) -> dict[str, Any]:
        seen: dict[tuple[str, str], int] = {}
        out: dict[str, Any] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                ident = ("scalar", key_node.value)
                if ident in seen:
                    self.duplicates.append((_where(key_node), f"mapping key \"{key_node.value}\" already defined at line {seen[ident]}"))
                    continue
                seen[ident] = _where(key_node)
                if key_node.tag == PLAIN and key_node.value == "<<":
                    merges.append(value_node)
                    continue
                key = self.scalar(key_node, (*path, "[key]"))
                self.written.pop((*path, "[key]"), None)
                key = _key_text(key)
            else:
                key = _key_text(self.value(key_node, (*path, "[key]"), depth + 1))
            out[key] = self.value(value_node, (*path, key), depth + 1)
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise StackFileError("map merge requires map or sequence of maps as the value", _where(merge))
                for k, v in self.mapping(source, path, depth + 1).items():
                    out.setdefault(k, v)
        return out


def _key_text(key: Any) -> str:
    """A mapping key as Pulumi keeps it: fmt.Sprintf("%v", k) (object.go, map[any]any)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "<nil>"
    if isinstance(key, float):
        return go_json_number(key)
    return str(key)


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def parse(text: str) -> Read:
    """The first document of `text` as the CLI reads it (yaml.v3 Unmarshal reads the first); StackFileError otherwise."""
    loader = _Loader(text)
    try:
        node = loader.get_node() if loader.check_node() else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise StackFileError(problem, mark.line + 1 if mark is not None else None) from None
    except yaml.YAMLError as e:
        raise StackFileError(" ".join(str(e).split())) from None
    finally:
        loader.dispose()
    if node is None:
        return Read(None)
    reader = _Reader()
    value = reader.value(node, ())
    if reader.duplicates:
        line, message = reader.duplicates[0]
        raise StackFileError(message + "".join(f"; line {ln}: {m}" for ln, m in reader.duplicates[1:]), line)
    return Read(value, reader.written)


def engine_value(value: Any) -> Any:
    """A `config:` entry as the CLI hands it to the program: a scalar as its text (None as "", as the
    CLI does with a warning), a list or mapping as what its JSON text parses back to, a `secure:`
    mapping kept as it is."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_json_number(value)
    return _json_numbers(value)


def _json_numbers(value: Any) -> Any:
    """Floats as Go's JSON writes and Python's json reads them back: a whole float is an integer."""
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if isinstance(value, float) and not isinstance(value, bool) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value
