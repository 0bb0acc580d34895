"""SLERP between exactly two models."""
from __future__ import annotations

from pydantic.dataclasses import dataclass

from ..ops import spherical
from .inputs import Inputs
from .params import STRICT, Fraction
from .registry import method


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
def slerp(x: Inputs, p: Slerp):
    """Spherical interpolation of two flattened weight tensors; linear for (near-)colinear or zero inputs."""
    a, b = x.stack[0].reshape(-1), x.stack[1].reshape(-1)
    return spherical.slerp(a, b, p.t).reshape(x.stack.shape[1:])
