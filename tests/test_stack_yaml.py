"""`make plan` reads Pulumi.<stack>.yaml as the Pulumi CLI does (issue 23); tests/engine/test_yaml_parity.py
compares the reader with the real CLI, these check what a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from tools import plan

ROOT = Path(__file__).resolve().parent.parent
DEV = (ROOT / "Pulumi.dev.yaml").read_text()


def _plan_config(tmp_path: Path, text: str):
    (tmp_path / "Pulumi.t.yaml").write_text(text)
    config = plan.load_stack_file("t", tmp_path)
    values, secrets = plan.plan_config(config, "t")
    plan.check_plan_config(values, secrets, "t", config.written)
    return values, secrets


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        _plan_config(tmp_path, text)
    return [str(i) for i in e.value.issues]


def test_unquoted_pci_address_is_a_string(tmp_path):
    values, _ = _plan_config(tmp_path, DEV.replace('address: "0000:3b:00.0"', "address: 0000:3b:00.0"))
    assert '"address": "0000:3b:00.0"' in values["gpu-stack:vms"]


@pytest.mark.parametrize("old,new,line", [
    ('version: "24.04"', "version: 24.04",
     "gpu-stack:guest.os.version: Input should be '22.04', '24.04' or '9'; the stack file's 24.04 is read by YAML as a number, not text: quote it, \"24.04\""),
    ("version: 1.36.5", "version: 1.30",
     "gpu-stack:kubernetes.version: Input should be a valid string; the stack file's 1.30 is read by YAML as a number, not text: quote it, \"1.30\""),
])
def test_a_number_where_text_is_expected_shows_the_text_as_written(tmp_path, old, new, line):
    assert old in DEV
    assert _problems(tmp_path, DEV.replace(old, new)) == [line]


def test_duplicate_key_refused_with_both_lines(tmp_path):
    text = DEV.replace("      memoryGib: 64\n", "      memoryGib: 64\n      memoryGib: 32\n")
    first = text.splitlines().index("      memoryGib: 64") + 1
    [line] = _problems(tmp_path, text)
    assert line == (f"gpu-stack:(file): Pulumi.t.yaml: line {first + 1}: mapping key \"memoryGib\" already defined at line {first}; "
                    "each key may appear once in a mapping (the Pulumi CLI refuses the file too)")


def test_other_namespaces_pass_through_and_unknown_gpu_stack_keys_are_refused(tmp_path):
    other = DEV + "  pulumi:tags:\n    team: gpu\n  libvirt:uri: qemu:///system\n"
    values, secrets = _plan_config(tmp_path, other)
    assert plan.stack_config(values, secrets).vms[0].name == "gpu-dev-0"
    assert values["libvirt:uri"] == "qemu:///system"
    problems = _problems(tmp_path, other + "  gpu-stack:tags: {}\n")
    assert [p.split(";")[0] for p in problems] == ["gpu-stack:tags: unknown key"]
