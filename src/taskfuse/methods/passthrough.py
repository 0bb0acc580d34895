"""Passthrough: copy one model's tensor unchanged (layer stacking, copied buffers)."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Passthrough:
    source: Annotated[int, Field(ge=0)] = 0  # index of the model (in the job's sources) to copy


@method(
    "passthrough",
    params=Passthrough,
    space="weight",
    paper="(no paper) frankenmerging / layer stacking practice",
    reference="mergekit passthrough",
    traits=("chunkable", "idempotent"),
)
def passthrough(x: Inputs, p: Passthrough):
    """The `source` model's tensor, unchanged."""
    if p.source >= x.count:
        raise ValueError(f"passthrough source {p.source} out of range for {x.count} models")
    return x.stack[p.source].clone()
