"""SLERP between exactly two models."""
from __future__ import annotations

import math

import torch
from pydantic.dataclasses import dataclass

from ..ops import spherical
from .params import STRICT, Fraction
from .registry import method
from .sliced import SliceInputs, sliced


@dataclass(config=STRICT)
class Slerp:
    t: Fraction = 0.5  # 0 gives the first model, 1 the second


@method(
    "slerp",
    params=Slerp,
    space="weight",
    paper="Shoemake 1985, Animating rotation with quaternion curves, SIGGRAPH; as used for LLM merging",
    reference="mergekit slerp",
    traits=("idempotent",),
    min_models=2,
    max_models=2,
)
@sliced
def slerp(x: SliceInputs, p: Slerp):
    """Spherical interpolation of two flattened weight tensors; linear for (near-)colinear or zero inputs."""
    gram = x.slices.gram()  # one pass for a·b, |a|², |b|², then a weighted sum per slice
    weights = spherical.slerp_weights(float(gram[0, 1]), math.sqrt(gram[0, 0]), math.sqrt(gram[1, 1]), p.t)
    if weights is None:
        return lambda chunk, sl: torch.lerp(chunk[0], chunk[1], p.t)
    wa, wb = weights
    return lambda chunk, sl: chunk[0].mul_(wa).add_(chunk[1], alpha=wb)
