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
    # one pass for a·b, |a|², |b|² (float64 sums of float32 slices), then a weighted sum per slice
    stats = x.slices.sum(lambda c, sl: torch.stack([c[0] @ c[1], c[0] @ c[0], c[1] @ c[1]]).double()) \
        if x.slices.numel else torch.zeros(3, dtype=torch.float64)
    dot, aa, bb = stats.tolist()
    weights = spherical.slerp_weights(dot, math.sqrt(aa), math.sqrt(bb), p.t)
    if weights is None:
        return lambda chunk, sl: torch.lerp(chunk[0], chunk[1], p.t)
    wa, wb = weights
    return lambda chunk, sl: chunk[0].mul_(wa).add_(chunk[1], alpha=wb)
