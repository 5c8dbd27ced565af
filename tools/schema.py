"""`make schema`: write the JSON Schema of the stack config for editors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from config.models import SECRET_KEYS, StackConfig

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "config.schema.json"


def config_schema() -> dict:
    """Schema of a whole Pulumi.<stack>.yaml file, keys prefixed `gpu-stack:`."""
    model = StackConfig.model_json_schema(by_alias=True, mode="validation")
    defs = model.pop("$defs", {})
    props = {f"gpu-stack:{k}": v for k, v in model["properties"].items()}
    for key in SECRET_KEYS:
        props[f"gpu-stack:{key}"] = {
            "description": "Secret: set with `pulumi config set --secret`.",
            "type": "object",
            "properties": {"secure": {"type": "string"}},
            "required": ["secure"],
            "additionalProperties": False,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gpu-stack Pulumi stack file",
        "type": "object",
        "properties": {
            "config": {"type": "object", "properties": props, "additionalProperties": False},
            "encryptionsalt": {"type": "string"},
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
        },
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}", file=sys.stderr)
