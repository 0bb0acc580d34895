"""SLERP between exactly two models."""
from __future__ import annotations

import math

import torch
from pydantic.dataclasses import dataclass

from ..ops import spherical
from .params import STRICT, Fraction
from .registry import method
from .sliced import ALL_EMITTED, SliceInputs, sliced


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
    """Spherical interpolation of two flattened weight tensors; linear for (near-)colinear or zero inputs.

    One pass gathers a·b, |a|², |b|²; then each slice is a weighted sum. Where the executor offers `emit`, that
    pass also emits the linear result: fine-tunes of one base are usually colinear within the threshold, and the
    merge is then done in one read of the inputs instead of two (else the second pass overwrites it).
    """
    def emit_lerp(chunk: torch.Tensor, sl: slice, products: torch.Tensor) -> None:
        # no entry exceeds its row's norm, and a lerp of two values stays within twice the larger (its difference)
        x.emit(torch.lerp(chunk[0], chunk[1], p.t), sl, bound=math.sqrt(float(products.diagonal().max())))

    gram = x.slices.gram(also=emit_lerp if x.emit is not None else None)
    weights = spherical.slerp_weights(float(gram[0, 1]), math.sqrt(gram[0, 0]), math.sqrt(gram[1, 1]), p.t)
    if weights is None:
        return ALL_EMITTED if x.emit is not None else lambda chunk, sl: torch.lerp(chunk[0], chunk[1], p.t)
    wa, wb = weights
    return lambda chunk, sl: chunk[0].mul_(wa).add_(chunk[1], alpha=wb)
