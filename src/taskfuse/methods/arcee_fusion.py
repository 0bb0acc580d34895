"""Arcee Fusion: one model's changes to the base kept only where they stand out, by an outlier threshold on an
importance score."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from .inputs import Inputs
from .params import STRICT
from .registry import method

SOFTMAX_FLOOR = 1e-8  # added to both softmaxes before their ratio's logarithm, as mergekit does
# the threshold is the median plus this many interquartile ranges (Tukey's fence for outliers)
FENCE = 1.5


@dataclass(config=STRICT)
class ArceeFusion:
    """No parameters: mergekit's arcee_fusion takes none."""


def importance(tuned: Tensor, base: Tensor) -> Tensor:
    """|tuned − base| per entry times KL(softmax(tuned) ‖ softmax(base)) of its row (the last axis; one value for a
    1-D tensor): an entry matters where it moved and its row's distribution, read as logits, moved too."""
    p = torch.softmax(tuned, dim=-1) + SOFTMAX_FLOOR
    q = torch.softmax(base, dim=-1) + SOFTMAX_FLOOR
    divergence = (p * (p / q).log()).sum(dim=-1, keepdim=True)
    return (tuned - base).abs() * divergence


def order_statistic(flat: Tensor, q: float) -> Tensor:
    """The entry at sorted position ⌊q · (n − 1)⌋ (no interpolation between neighbours, as mergekit's quantiles)."""
    position = int(torch.tensor(q) * (flat.numel() - 1))  # float32 product, truncated, as mergekit computes it
    return flat.kthvalue(position + 1).values


def fusion_mask(scores: Tensor) -> Tensor:
    """1 where a score reaches median + 1.5 · (q3 − q1) over the tensor, else 0."""
    flat = scores.reshape(-1)
    q1, median, q3 = (order_statistic(flat, q) for q in (0.25, 0.5, 0.75))
    return (scores >= median + FENCE * (q3 - q1)).to(scores.dtype)


@method(
    "arcee_fusion",
    params=ArceeFusion,
    space="delta",
    paper="(no paper) Arcee Fusion, Arcee AI's merge method (mergekit's docs/merge_methods.md)",
    reference="mergekit 0.1.5's arcee_fusion (tests/fixtures/mergekit); mergekit takes the quartiles of tensors "
              "over a million entries from a random sample of a million, taskfuse takes them exactly",
    min_models=1,
    max_models=1,
)
def arcee_fusion(x: Inputs, p: ArceeFusion):
    """τ · 1[importance ≥ median + 1.5 · IQR], importance = |τ| · KL(softmax(θ₀ + τ) ‖ softmax(θ₀)) per row.

    The base is the spec's base, the other model its one model; the models' weights are not used (mergekit's
    neither)."""
    tau = x.stack[0]
    return tau * fusion_mask(importance(x.base + tau, x.base))
