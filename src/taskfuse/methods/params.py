"""Parameter types shared by Params dataclasses, and per-model value resolution."""
from __future__ import annotations

from typing import Annotated, Union

import torch
from pydantic import ConfigDict, Field
from torch import Tensor

# Every Params dataclass forbids unknown fields so a typo is an error, never a silently ignored key.
STRICT = ConfigDict(extra="forbid", frozen=True)

Density = Annotated[float, Field(gt=0.0, le=1.0, description="fraction of entries kept, in (0, 1]")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# A per-model parameter: one value for all models, or one per model (in the order of the spec's models).
PerModelDensity = Union[Density, tuple[Density, ...]]
PerModelFraction = Union[Fraction, tuple[Fraction, ...]]


def per_model(value: float | tuple[float, ...], count: int, name: str = "value") -> Tensor:
    """(T,) tensor from a scalar or a per-model tuple; a tuple of the wrong length is an error."""
    if isinstance(value, tuple):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} per-model values for {count} models")
        return torch.tensor(value, dtype=torch.float32)
    return torch.full((count,), float(value))
