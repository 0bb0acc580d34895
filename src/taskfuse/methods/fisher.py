"""Fisher merging: each entry a Fisher-weighted average of the models' values (a Laplace approximation of each
model's posterior, merged by maximising their joint likelihood)."""
from __future__ import annotations

from pydantic import Field
from pydantic.dataclasses import dataclass

from ..ops.consensus import combine
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Fisher:
    # added to every Fisher value before weighting (FusionBench's minimal_fisher_weight): an entry no model's data
    # moved is then the weighted average instead of 0/0
    floor: float = Field(1e-6, gt=0.0)


@method(
    "fisher",
    params=Fisher,
    space="weight",
    paper="Matena & Raffel 2022, Merging Models with Fisher-Weighted Averaging, NeurIPS, arXiv:2111.09832",
    reference="fusion_bench.method.fisher_merging.fisher_merging.merging_with_fisher_weights (FusionBench 0.2.33)",
    traits=("symmetric", "idempotent"),
    statistics="fisher",
)
def fisher(x: Inputs, p: Fisher):
    """θ* = Σ_t w_t F_t θ_t / Σ_t w_t F_t entrywise, F_t each model's diagonal Fisher; without one, averaged."""
    if x.statistics is None:
        return combine(x.stack, x.weights, "weights")
    shape = (-1,) + (1,) * (x.stack.dim() - 1)
    importance = (x.statistics + p.floor) * x.weights.view(shape)  # Eq. 3, with the models' weights as prior scales
    return (importance * x.stack).sum(0) / importance.sum(0)
