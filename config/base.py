"""What every config model shares: the pydantic base (frozen, extra='forbid', camelCase aliases) and the catalog's model names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from config.catalog import GPU_MODELS, NVSWITCH_MODELS

GpuModelName = Literal[tuple(GPU_MODELS)]  # type: ignore[valid-type]
NvSwitchModelName = Literal[tuple(NVSWITCH_MODELS)]  # type: ignore[valid-type]
DeviceModelName = Literal[tuple(GPU_MODELS) + tuple(NVSWITCH_MODELS)]  # type: ignore[valid-type]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )
