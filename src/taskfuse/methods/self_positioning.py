"""Self Positioning: the base plus λ times an iterated SLERP of the task vectors (Li et al. 2024)."""
from __future__ import annotations

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from typing import Annotated

from ..errors import SpecError
from ..ops.spherical import iterative_slerp_coefficients
from .params import STRICT
from .registry import method
from .sliced import SliceInputs, sliced


@dataclass(config=STRICT)
class SelfPositioning:
    scale: Annotated[float, Field(ge=0)] = 1.0  # λ: how far from the base along the interpolated task vector


@method(
    "self_positioning",
    params=SelfPositioning,
    space="delta",
    paper="Li et al. 2024, Improving General Text Embedding Model: Tackling Task Conflict and Data Imbalance "
          "through Model Merging, arXiv:2410.15035 (Self Positioning)",
    reference="none public (the paper has no code); implemented from the paper, see docs/learned.md",
)
@sliced
def self_positioning(x: SliceInputs, p: SelfPositioning):
    """λ · slerp(…slerp(slerp(τ₁, τ₂, t₂), τ₃, t₃)…, τ_T, t_T) with t_k = w_k / Σ_{i≤k} w_i (model order matters).

    The weights and λ are what `taskfuse learn self_positioning` learns on a probe set; the merge itself is
    data-free and streams like SLERP: one pass for the (T, T) Gram matrix of the task vectors, one for the sum.
    """
    if bool((x.weights < 0).any()) or not bool((x.weights > 0).any()):
        raise SpecError(f"self_positioning at {x.key or 'a tensor'}: model weights {x.weights.tolist()} must be "
                        "non-negative with at least one above 0 (they are interpolation weights). Fix: give every "
                        "model a weight >= 0.")
    c = iterative_slerp_coefficients(x.slices.gram(), x.weights.double()) * p.scale
    return lambda chunk, sl: c.to(chunk.dtype) @ chunk
