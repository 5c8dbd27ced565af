"""docs/config.schema.json is current and accepts the stack files editors open."""

from __future__ import annotations

import json

import jsonschema
import yaml

from tests.conftest import ROOT
from tools.schema import TARGET, render


def test_committed_schema_is_current():
    assert TARGET.read_text() == render(), "run `make schema` and commit docs/config.schema.json"


def test_stack_files_validate_against_the_schema():
    schema = json.loads(TARGET.read_text())
    stacks = sorted(ROOT.glob("Pulumi.*.yaml"))
    assert stacks
    for path in stacks:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_schema_rejects_a_misspelled_key():
    schema = json.loads(TARGET.read_text())
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["gpu-stack:vms"][0]["memoryGB"] = 64
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        assert "memoryGB" in e.message
    else:
        raise AssertionError("the schema accepted an unknown key")
