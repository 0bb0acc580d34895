"""RegMean: the linear layer that best reproduces every model's outputs on its own task's inputs (closed form)."""
from __future__ import annotations

from pydantic.dataclasses import dataclass

from ..ops.consensus import combine
from ..ops.least_squares import regression_mean
from .inputs import Inputs
from .params import STRICT, Fraction
from .registry import method


@dataclass(config=STRICT)
class Regmean:
    # α: each Gram's off-diagonal entries are multiplied by this (the paper's regulariser; 1 is the exact
    # regression, 0 a per-input-feature weighted average). 0.9 as the default; FusionBench's config uses 0.1
    off_diagonal_scale: Fraction = 0.9


@method(
    "regmean",
    params=Regmean,
    space="weight",
    paper="Jin et al. 2023, Dataless Knowledge Fusion by Merging Weights of Language Models (RegMean), ICLR, "
          "arXiv:2212.09849; RegMean++ (Nguyen et al. 2025, arXiv:2508.03121) is the same merge with Gram matrices "
          "taken through the partly merged model",
    reference="fusion_bench.method.regmean.regmean.merging_with_regmean_weights (FusionBench 0.2.33)",
    traits=("symmetric", "idempotent"),
    statistics="gram",
)
def regmean(x: Inputs, p: Regmean):
    """W* = (Σ_t w_t W_t G̃_t)(Σ_t w_t G̃_t)⁻¹ per linear weight from each model's input Gram; others averaged."""
    if x.statistics is None or x.stack.dim() != 3:  # (T, out, in) matrices only
        # biases, norms, embeddings: the paper's simple average (weighted by the models' weights)
        return combine(x.stack, x.weights, "weights")
    return regression_mean(x.stack, x.statistics, x.weights, p.off_diagonal_scale)
