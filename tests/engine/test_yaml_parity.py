"""`make plan` reads a stack file as the real Pulumi CLI does (issue 23, "YAML read differently").

Each row is a stack file's `config:`. The CLI from `make engine` reads it in a throwaway stack (a local
file backend in a temp dir) and prints what it read with `pulumi config --json`: every key's `value`
is the string the program gets, and a list or mapping is that string as JSON (also shown parsed, as
`objectValue`). tools.plan.load_stack_file reads the same file; the two must agree key by key, and a
file the CLI refuses must be refused by `make plan` too (a duplicate key with the CLI's own words).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from config.errors import ConfigError
from tools.engine import PROJECT, throwaway_env
from tools.plan import load_stack_file

STACK = "parity"

# (id, the lines under `config:`); each key must come back as the CLI read it
READ = [
    ("pci-address-base60", "gpu-stack:a: 0000:17:00.0\n  gpu-stack:b: 17:00.0\n  gpu-stack:c: 1:20\n  gpu-stack:d: 190:20:30"),
    ("versions", 'gpu-stack:a: 1.34\n  gpu-stack:b: "1.34"\n  gpu-stack:c: 1.30\n  gpu-stack:d: 24.04\n  gpu-stack:e: 1.32.4\n  gpu-stack:f: 570.172.08'),
    ("booleans", "gpu-stack:a: yes\n  gpu-stack:b: no\n  gpu-stack:c: on\n  gpu-stack:d: off\n  gpu-stack:e: y\n  gpu-stack:f: True\n"
                 "  gpu-stack:g: FALSE\n  gpu-stack:h: tRUE\n  gpu-stack:i: 'true'"),
    ("integers", "gpu-stack:a: 0o17\n  gpu-stack:b: 017\n  gpu-stack:c: 08\n  gpu-stack:d: 0x1F\n  gpu-stack:e: 0b101\n  gpu-stack:f: 1_000\n"
                 "  gpu-stack:g: +12\n  gpu-stack:h: -0\n  gpu-stack:i: 99999999999999999999\n  gpu-stack:j: -0x10\n  gpu-stack:k: 0o19"),
    ("floats", "gpu-stack:a: 1e3\n  gpu-stack:b: 1e30\n  gpu-stack:c: 1e-7\n  gpu-stack:d: .5\n  gpu-stack:e: 2.50\n  gpu-stack:f: 1.\n"
               "  gpu-stack:g: 0.000001\n  gpu-stack:h: -1.5e-7\n  gpu-stack:i: 1e21"),
    ("nulls", "gpu-stack:a: ~\n  gpu-stack:b: null\n  gpu-stack:c:\n  gpu-stack:d: NULL\n  gpu-stack:e: ''"),
    ("timestamps", "gpu-stack:a: 2024-01-01\n  gpu-stack:b: 2024-01-02T03:04:05Z\n  gpu-stack:c: 2024-01-02 03:04:05.250\n  gpu-stack:d: 2024-13-01"),
    ("nested", "gpu-stack:vms:\n    - name: gpu-0\n      memoryGib: 064\n      gpus:\n        - address: 0000:17:00.0\n          numaNode: 0\n"
               "      enabled: yes\n      ratio: 1e3\n      version: 1.30\n      none: ~\n      when: 2024-01-01\n      1: one\n      true: t\n"
               "      list: [0o17, 017, 1.50, on, null]"),
    ("anchors-and-merge", "gpu-stack:a: &base\n    cpus: 8\n    name: x\n  gpu-stack:b:\n    <<: *base\n    name: y\n"
                          "  gpu-stack:c: *base\n  gpu-stack:d: &s 0000:3b:00.0\n  gpu-stack:e: *s\n"
                          "  gpu-stack:f:\n    <<: [*base, {cpus: 2, mem: 4}]"),
    ("multi-line-strings", "gpu-stack:a: |\n    line 1\n    line 2\n  gpu-stack:b: >\n    folded\n    text\n\n    para\n"
                           "  gpu-stack:c: |-\n    no newline\n  gpu-stack:d: >+\n    keep\n\n  gpu-stack:e: \"esc\\tin\\nquotes\"\n"
                           "  gpu-stack:f: plain\n    continued\n  gpu-stack:g: 'single ''quoted'''"),
    ("tabs-in-values", "gpu-stack:a: a\tb\n  gpu-stack:b: \"\\t\"\n  gpu-stack:c: x \t# comment"),
    ("explicit-tags", "gpu-stack:a: !!str 017\n  gpu-stack:b: !!str 1.34\n  gpu-stack:c: !!str yes\n  gpu-stack:d: !custom 1.5"),
    ("other-namespaces", "pulumi:tags:\n    team: gpu\n  libvirt:uri: qemu:///system\n  kubernetes:context: lab\n  gpu-stack:a: 1"),
]

# (id, the lines under `config:`, text both messages must contain); the CLI refuses the file
REFUSED = [
    ("duplicate-top-level", "gpu-stack:a: 1\n  gpu-stack:a: 2", 'mapping key "gpu-stack:a" already defined at line 3'),
    ("duplicate-nested", "gpu-stack:vms:\n    - name: a\n      memoryGib: 1\n      memoryGib: 2", 'mapping key "memoryGib" already defined at line 5'),
    ("duplicate-by-text", "gpu-stack:m:\n    '1': a\n    1: b", 'mapping key "1" already defined at line 4'),
    ("tab-indent", "gpu-stack:a:\n\tb: 1", "line 4"),
    ("infinity", "gpu-stack:a: .inf", None),
    ("infinity-nested", "gpu-stack:a: {b: -.Inf}", None),
    ("unclosed-quote", 'gpu-stack:a: "open', None),
]


@pytest.fixture(scope="module")
def cli(engine: Path, tmp_path_factory: pytest.TempPathFactory):
    """Write a `config:` into the throwaway stack's file and return (rc, parsed --json or stderr)."""
    tmp = tmp_path_factory.mktemp("yaml-parity")
    for d in ("state", "home", "project"):
        (tmp / d).mkdir()
    project = tmp / "project"
    (project / "Pulumi.yaml").write_text(f"name: {PROJECT}\nruntime: python\n")
    env = {**os.environ, **throwaway_env(tmp)}
    pulumi = str(engine / "pulumi")
    subprocess.run([pulumi, "stack", "init", STACK, "--non-interactive"], cwd=project, env=env, check=True, capture_output=True)
    settings = project / f"Pulumi.{STACK}.yaml"
    salt = next(line for line in settings.read_text().splitlines() if line.startswith("encryptionsalt:"))

    def read(config_lines: str) -> tuple[int, str | dict, Path]:
        settings.write_text(f"{salt}\nconfig:\n  {config_lines}\n")
        done = subprocess.run([pulumi, "config", "--json", "--stack", STACK, "--non-interactive"],
                              cwd=project, env=env, capture_output=True, text=True, timeout=60)
        return done.returncode, json.loads(done.stdout) if done.returncode == 0 else done.stderr, project

    return read


def _as_cli_shows(value: object) -> tuple[str, object]:
    """Our loader's value as the CLI's `value` string, or (for a list or mapping) its parsed JSON."""
    if isinstance(value, str):
        return "value", value
    return "objectValue", value


@pytest.mark.parametrize("config", [c for _, c in READ], ids=[i for i, _ in READ])
def test_plan_reads_what_the_cli_reads(cli, config: str):
    rc, shown, project = cli(config)
    assert rc == 0, f"the CLI refused a row meant to be read: {shown}"
    ours = load_stack_file(STACK, project)
    assert sorted(ours) == sorted(shown), "the keys differ"
    for key, value in ours.items():
        field, mine = _as_cli_shows(value)
        assert field in shown[key], f"{key}: the CLI read {shown[key]!r}, the loader {value!r}"
        theirs = shown[key][field]
        assert mine == theirs and type(mine) is type(theirs), f"{key}: the CLI read {theirs!r}, `make plan` {mine!r}"
        if field == "objectValue":  # the program gets the JSON text: same numbers, same types
            assert json.loads(shown[key]["value"]) == mine


@pytest.mark.parametrize("config,words", [(c, w) for _, c, w in REFUSED], ids=[i for i, _, _ in REFUSED])
def test_plan_refuses_what_the_cli_refuses(cli, config: str, words: str | None):
    rc, shown, project = cli(config)
    assert rc != 0, f"the CLI read a row meant to be refused: {shown}"
    with pytest.raises(ConfigError) as e:
        load_stack_file(STACK, project)
    [issue] = e.value.issues
    assert issue.path == "(file)" and f"Pulumi.{STACK}.yaml" in issue.message
    if words is not None:
        assert words in shown, shown
        assert words in issue.message, issue.message
