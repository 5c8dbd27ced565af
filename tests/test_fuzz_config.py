"""Property-based: no input of any shape gives a traceback.

Hypothesis generates YAML-ish documents and mutations of the real stack
files (wrong types, deleted keys, unknown keys, random strings, nested lists
and mappings, values moved from elsewhere in the file). The config path
(stacks.load.read_stack_file + tools.plan.plan_config + parse_stack_config)
must either accept them or raise ConfigError whose every issue names a key;
a few examples go through the whole `make plan` (tools.plan.main), which
must exit 0 with a plan or 1 with only `gpu-stack:<key>: ...` lines on stderr.
Derandomized and bounded, so it runs the same examples in CI in seconds.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.errors import ConfigError
from stacks.load import read_stack_file
from tests.conftest import ROOT
from tools import plan as plan_tool

STACKS = {p.name[len("Pulumi."):-len(".yaml")]: yaml.safe_load(p.read_text()) for p in sorted(ROOT.glob("Pulumi.*.yaml"))}
STACKS.pop("yaml", None)  # Pulumi.yaml is the project file
COMMON = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "true", "null", "[]", "{}", "0000:3b:00.0", "52:54:00:AA:BB:CC",
                     "192.168.122.300", "10.0.0.0/33", "1.32", "ubuntu", "default", "0-3,8", "NoSchedule",
                     "nvcr.io/nvidia/cuda", "http://proxy:3128", "secure", "\t", "é", "a" * 300]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(["name", "secure", "address", "gpus", "id", "cpus"])), inner, max_size=4),
), max_leaves=12)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _leaves(v)]
    if isinstance(node, list):
        return [x for v in node for x in _leaves(v)]
    return [node]


@st.composite
def mutated_stacks(draw) -> dict:
    """A real stack file with one to three mutations anywhere in `config:`."""
    doc = copy.deepcopy(STACKS[draw(st.sampled_from(sorted(STACKS)))])
    for _ in range(draw(st.integers(1, 3))):
        config = doc["config"]
        path = draw(st.sampled_from(_paths(config)[1:]))
        parent: Any = config
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["perturb", "perturb", "replace", "swap", "delete", "add-key", "wrap"]))
        current = parent[last]
        if action == "perturb":  # same type, other value: gets past the field checks to the cross-field ones
            if isinstance(current, bool):
                parent[last] = not current
            elif isinstance(current, int):
                parent[last] = draw(st.one_of(st.integers(-2, 300), st.sampled_from([current * 2, current // 2, current + 1, 2**31, 4097])))
            elif isinstance(current, str):
                parent[last] = draw(st.one_of(st.sampled_from(sorted({x for x in _leaves(config) if isinstance(x, str)})), st.text(max_size=20)))
            elif isinstance(current, list) and current:
                parent[last] = current + [copy.deepcopy(draw(st.sampled_from(current)))] if draw(st.booleans()) else current[1:]
            else:
                parent[last] = draw(values)
        elif action == "replace":
            parent[last] = draw(values)
        elif action == "swap":
            parent[last] = copy.deepcopy(draw(st.sampled_from(_leaves(config))))
        elif action == "delete":
            del parent[last]
        elif action == "add-key" and isinstance(parent[last], dict):
            parent[last][draw(st.text(min_size=1, max_size=10))] = draw(values)
        else:
            parent[last] = [parent[last]] if draw(st.booleans()) else {"x": parent[last]}
    return doc


documents = st.one_of(
    mutated_stacks(),
    values,
    st.fixed_dictionaries({"config": values}),
    st.fixed_dictionaries({"config": st.dictionaries(st.sampled_from([
        "gpu-stack:hosts", "gpu-stack:vms", "gpu-stack:guest", "gpu-stack:kubernetes", "gpu-stack:addons",
        "gpu-stack:production", "gpu-stack:sshPrivateKey", "gpu-stack:grafanaAdminPassword", "production", "libvirt:uri",
    ]), values, max_size=5)}),
)


def _texts(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return repr(doc)


raw_texts = st.one_of(
    documents.map(_texts),
    st.text(max_size=200),
    st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
    documents.map(lambda d: _texts(d).replace("  ", "\t", 1)),
)


def assert_named(error: ConfigError) -> None:
    assert error.issues
    for issue in error.issues:
        assert isinstance(issue.path, str) and issue.path, issue
        assert isinstance(issue.message, str) and issue.message.strip(), issue
        assert str(issue).startswith("gpu-stack:")


def _config_path(tmp: Path, content: bytes, stack: str = "fuzz") -> None:
    path = tmp / f"Pulumi.{stack}.yaml"
    path.write_bytes(content)
    try:
        values, secret_keys = plan_tool.plan_config(read_stack_file(path), stack)
        plan_tool.check_plan_config(values, secret_keys, stack)
    except ConfigError as e:
        assert_named(e)


@COMMON
@given(doc=documents)
def test_config_path_accepts_or_names_the_key(tmp_path_factory, doc):
    _config_path(tmp_path_factory.mktemp("fuzz"), _texts(doc).encode())


@COMMON
@given(text=raw_texts, encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_any_bytes_accepted_or_named(tmp_path_factory, text, encoding):
    _config_path(tmp_path_factory.mktemp("bytes"), text.encode(encoding, "replace"))


@COMMON
@given(doc=mutated_stacks())
def test_parse_stack_config_never_raises_anything_else(doc):
    from stacks.load import parse_stack_config

    raw = {k.split(":", 1)[-1]: v for k, v in doc["config"].items() if not str(k).startswith("libvirt:")}
    try:
        parse_stack_config(raw, {"sshPrivateKey", "grafanaAdminPassword"}, "fuzz")
    except ConfigError as e:
        assert_named(e)


@settings(COMMON, max_examples=8)
@given(doc=mutated_stacks())
def test_make_plan_plans_or_exits_1_with_keys(tmp_path_factory, doc):
    tmp = tmp_path_factory.mktemp("plan")
    (tmp / "Pulumi.fuzz.yaml").write_text(_texts(doc))
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        rc = plan_tool.main(["fuzz", "--out", str(tmp / "plan"), "--stack-dir", str(tmp)])
    err = stderr.getvalue()
    if rc == 0:
        assert (tmp / "plan" / "fuzz" / "resources.json").exists()
    else:
        assert rc == 1
        lines = err.splitlines()
        assert lines and all(line.startswith("gpu-stack:") for line in lines), err
