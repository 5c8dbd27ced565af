"""The house's shape, read from the source with `ast` (docs/ARCHITECTURE.md, "Floors and rooms").

Three rules, each over every production .py file of the repository (not tests/, not .venv):

1. floors: a module imports nothing from a floor above its own (FLOORS below, the one table);
2. kinds: outside hypervisors/ no module names a hypervisor kind (a string literal equal to the name of
   a hypervisors/<kind>/ folder); config/ may list the kinds (the schema's Host.kind and the per-kind
   config blocks live on the ground floor) but never compares with one: that would be a switch on the kind;
3. rooms: a file in hypervisors/<a>/ imports nothing of hypervisors/<b>/ nor the table (hypervisors/base.py):
   a backend is one folder, chosen only through HYPERVISORS;
4. tokens: outside hypervisors/ no string literal starts with a backend's provider type token (the table's
   `provider_tokens`: 'libvirt:', 'proxmoxve:', ...): a switch on a resource's type is a switch on the kind.

Each checker is a plain function of a root directory, and is tested on a planted violation in a tmp dir.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from tests.conftest import ROOT

FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (floor, the top-level packages and modules on it), from the ground up
    ("config", ("config",)),                             # models, types, errors, catalogs: imports nothing of the project's
    ("render", ("render", "facts")),                     # pure renderers; host facts parsed and checked
    ("hypervisors", ("hypervisors",)),                   # one folder per backend + the contract and its table
    ("components", ("components",)),                     # Pulumi ComponentResources: wiring only
    ("stacks", ("stacks", "convergence")),               # composition; the whole-plan convergence check
    ("tools", ("tools", "doctor", "__main__")),          # commands: plan, doctor, engine, bench, schema; the program
)
"""The one floor table. A new top-level package fails test_every_module_stands_on_a_floor until it is placed here."""

SKIP_DIRS = {"tests", ".venv", "node_modules", ".git", "build", "__pycache__"}


def floor_of() -> dict[str, int]:
    return {room: i for i, (_, rooms) in enumerate(FLOORS) for room in rooms}


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every production .py file under root."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if set(rel.parts[:-1]) & SKIP_DIRS or rel.parts[0] in SKIP_DIRS:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) for every import of the project's own modules, at any depth of the file.

    `from pkg import name` counts as an import of pkg.name where that is a module of the project."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                found.append((node.lineno, sub if sub in known else base))
    return [(line, m) for line, m in found if m and m.split(".")[0] in {k.split(".")[0] for k in known}]


# --- the three checkers ---------------------------------------------------------------


def floor_violations(root: Path, floors: dict[str, int]) -> list[str]:
    mods = modules(root)
    out = []
    for name, path in mods.items():
        own = floors.get(name.split(".")[0])
        for line, target in imports(name, path, set(mods)):
            other = floors.get(target.split(".")[0])
            if own is not None and other is not None and other > own:
                out.append(f"{path.relative_to(root)}:{line}: {name} (floor {own}) imports {target} (floor {other}), a floor above")
    return out


def unplaced(root: Path, floors: dict[str, int]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules(root)} - set(floors))


def kinds(root: Path) -> set[str]:
    """The hypervisor kinds: the folders of hypervisors/ that hold a backend."""
    return {p.parent.name for p in (root / "hypervisors").glob("*/backend.py")}


def kind_violations(root: Path) -> list[str]:
    names = kinds(root)
    out = []
    for name, path in modules(root).items():
        top = name.split(".")[0]
        if top == "hypervisors":
            continue
        tree = ast.parse(path.read_text(), str(path))
        compared = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Compare)
                    for c in [node.left, *node.comparators] for c in ast.walk(c)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                if top == "config" and id(node) not in compared:
                    continue  # the config vocabulary: Host.kind's values, a kind's own block
                out.append(f"{path.relative_to(root)}:{node.lineno}: {name} names the hypervisor kind {node.value!r}"
                           + (" in a comparison" if top == "config" else ""))
    return out


def room_violations(root: Path) -> list[str]:
    mods = modules(root)
    names = kinds(root)
    out = []
    for name, path in mods.items():
        parts = name.split(".")
        if parts[0] != "hypervisors" or len(parts) < 3 or parts[1] not in names:
            continue
        for line, target in imports(name, path, set(mods)):
            t = target.split(".")
            if t[0] != "hypervisors":
                continue
            if (len(t) >= 2 and t[1] in names and t[1] != parts[1]) or t[:2] == ["hypervisors", "base"] or t == ["hypervisors"]:
                out.append(f"{path.relative_to(root)}:{line}: {name} imports {target}: a backend uses its own folder and hypervisors/shared.py only")
    return out


def token_violations(root: Path, prefixes: tuple[str, ...]) -> list[str]:
    out = []
    for name, path in modules(root).items():
        if name.split(".")[0] == "hypervisors":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(prefixes):
                out.append(f"{path.relative_to(root)}:{node.lineno}: {name} spells the backend type token {node.value!r}")
    return out


def provider_tokens() -> tuple[str, ...]:
    """Every backend's provider type-token prefixes, from the table."""
    from hypervisors.base import HYPERVISORS

    return tuple(p for h in HYPERVISORS.values() for p in h.provider_tokens)


# --- the house as it is ---------------------------------------------------------------


def test_every_module_stands_on_a_floor():
    assert not unplaced(ROOT, floor_of()), "place these in FLOORS (tests/test_house.py) and docs/ARCHITECTURE.md"


def test_no_module_imports_from_a_floor_above():
    assert not floor_violations(ROOT, floor_of())


def test_no_module_outside_hypervisors_names_a_kind():
    assert not kind_violations(ROOT)


def test_no_backend_imports_another_backend():
    assert not room_violations(ROOT)


def test_no_module_outside_hypervisors_spells_a_backend_type_token():
    """No debt left: tools/plan.py's plan files and summary lines are each backend's plan_files and plan_summary."""
    assert token_violations(ROOT, provider_tokens()) == []


def contract_members() -> set[str]:
    """What hypervisors/base.py's Hypervisor protocol asks of a row: its methods and its annotated attributes."""
    from hypervisors.base import Hypervisor

    return {name for name in vars(Hypervisor) if not name.startswith("_")} | set(Hypervisor.__annotations__)


def test_every_backend_has_every_member_of_the_contract():
    """No member is optional (plan_files included): a caller asks the table, never `getattr(..., None)`."""
    from hypervisors.base import HYPERVISORS

    members = contract_members()
    assert {"plan_files", "plan_summary", "kind", "create", "mock"} <= members
    assert {kind: sorted(m for m in members if not hasattr(h, m)) for kind, h in HYPERVISORS.items()} == {k: [] for k in HYPERVISORS}


def test_each_backend_vm_resource_type_is_its_own():
    """The VM resource type rollout.json looks for is one of the backend's own tokens, and no two backends share a prefix."""
    from hypervisors.base import HYPERVISORS

    for h in HYPERVISORS.values():
        assert h.vm_resource_type.startswith(h.provider_tokens), h.kind
    prefixes = provider_tokens()
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and a.startswith(b)]


def test_the_table_the_folders_and_the_config_agree():
    """HYPERVISORS has one row per hypervisors/<kind>/ folder, and accepts exactly the kinds hosts[].kind does."""
    from config.models import Host
    from hypervisors.base import HYPERVISORS

    accepted = set(typing.get_args(Host.model_fields["kind"].annotation))
    assert set(HYPERVISORS) == kinds(ROOT) == accepted
    assert all(h.kind == kind for kind, h in HYPERVISORS.items())


# --- each checker fails on a planted violation ------------------------------------------


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


BACKENDS = {
    "hypervisors/__init__.py": "",
    "hypervisors/base.py": "from hypervisors.alpha import backend\n",
    "hypervisors/shared.py": "",
    "hypervisors/alpha/__init__.py": "",
    "hypervisors/alpha/backend.py": "from hypervisors.shared import x\nfrom hypervisors.alpha import util\n",
    "hypervisors/alpha/util.py": "",
    "hypervisors/beta/__init__.py": "",
    "hypervisors/beta/backend.py": "KIND = 'beta'\n",
    "config/__init__.py": "",
    "config/models.py": "from typing import Literal\nKind = Literal['alpha', 'beta']\n",
    "render/__init__.py": "",
    "render/ok.py": "from config import models\n",
}


def test_the_floor_checker_finds_an_import_from_above(tmp_path):
    root = _plant(tmp_path, {**BACKENDS, "render/up.py": "def f():\n    from hypervisors.alpha import backend\n"})
    assert floor_violations(root, floor_of()) == [
        "render/up.py:2: render.up (floor 1) imports hypervisors.alpha.backend (floor 2), a floor above"]
    assert unplaced(_plant(tmp_path, {"attic/__init__.py": ""}), floor_of()) == ["attic"]


def test_the_floor_checker_passes_a_clean_house(tmp_path):
    root = _plant(tmp_path, BACKENDS)
    assert floor_violations(root, floor_of()) == [] and kind_violations(root) == [] and room_violations(root) == []


def test_the_kind_checker_finds_a_kind_outside_hypervisors(tmp_path):
    root = _plant(tmp_path, {**BACKENDS, "render/switch.py": "def f(host):\n    return host.kind == 'alpha'\n",
                             "config/rules.py": "def g(host):\n    return host.kind in ('beta',)\n"})
    assert kinds(root) == {"alpha", "beta"}
    assert kind_violations(root) == [
        "config/rules.py:2: config.rules names the hypervisor kind 'beta' in a comparison",
        "render/switch.py:2: render.switch names the hypervisor kind 'alpha'",
    ]


def test_the_room_checker_finds_a_backend_importing_another(tmp_path):
    root = _plant(tmp_path, {**BACKENDS, "hypervisors/beta/uses.py": "from hypervisors import alpha\nimport hypervisors.base\nfrom . import backend\n"})
    assert room_violations(root) == [
        "hypervisors/beta/uses.py:1: hypervisors.beta.uses imports hypervisors.alpha: a backend uses its own folder and hypervisors/shared.py only",
        "hypervisors/beta/uses.py:2: hypervisors.beta.uses imports hypervisors.base: a backend uses its own folder and hypervisors/shared.py only",
    ]


def test_the_token_checker_finds_a_backend_type_outside_hypervisors(tmp_path):
    root = _plant(tmp_path, {**BACKENDS, "hypervisors/alpha/rows.py": "T = 'alpha:index/vm:Vm'\n",
                             "render/rows.py": "def f(row):\n    return row['type'] == 'alpha:index/vm:Vm'\n",
                             "tools/__init__.py": "", "tools/plan.py": "def g(t):\n    return t.startswith(f'alpha:{t}')\n"})
    assert token_violations(root, ("alpha:",)) == [
        "render/rows.py:2: render.rows spells the backend type token 'alpha:index/vm:Vm'",
        "tools/plan.py:2: tools.plan spells the backend type token 'alpha:'",
    ]
    assert token_violations(_plant(tmp_path / "clean", BACKENDS), ("alpha:",)) == []


@pytest.mark.parametrize("rel", ["tests/test_x.py", ".venv/lib/x.py"])
def test_tests_and_the_venv_are_not_rooms(tmp_path, rel):
    root = _plant(tmp_path, {**BACKENDS, rel: "from hypervisors.alpha import backend\nK = 'alpha'\n"})
    assert floor_violations(root, floor_of()) == [] and kind_violations(root) == []


@pytest.mark.parametrize("suffix", ["py", "sh"])
def test_no_source_line_over_200_characters(suffix):
    """Every .py file of the repository, tests included, and every shell script (scripts/guest/*.sh, render/*.sh,
    hypervisors/**/*.sh, the tools' scripts; not the plans rendered from them under tests/golden/ or build/). The
    guest scripts' long messages were wrapped into several arguments of die/fail/log, which print "$*": the same text."""
    skip = SKIP_DIRS - {"tests"} if suffix == "py" else SKIP_DIRS
    files = [p for p in sorted(ROOT.rglob(f"*.{suffix}")) if not set(p.relative_to(ROOT).parts) & skip]
    assert files
    long = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 200]
    assert not long
