"""Linear merge / model soup: a weighted average of the weights."""
from __future__ import annotations

from pydantic.dataclasses import dataclass

from ..ops.consensus import combine
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Linear:
    normalize: bool = True  # divide by Σ weights (a soup); False gives the plain weighted sum


@method(
    "linear",
    params=Linear,
    space="weight",
    paper="Wortsman et al. 2022, Model soups, ICML, arXiv:2203.05482",
    reference="peft.utils.merge_utils (weighted sum); mergekit linear",
    traits=("symmetric", "chunkable", "differentiable", "idempotent"),
)
def linear(x: Inputs, p: Linear):
    """Weighted average of the models' weights (uniform soup with default weights)."""
    return combine(x.stack, x.weights, "weights" if p.normalize else "none")
