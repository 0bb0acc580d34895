"""Model Stock: interpolate the average fine-tune toward the base by the angle between task vectors."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from .params import STRICT
from .registry import method
from .sliced import SliceInputs, sliced


@dataclass(config=STRICT)
class ModelStock:
    pass


def mean_pairwise_cosine(gram: torch.Tensor, eps: float = 1e-12) -> float:
    """Average cosine over all pairs of task vectors from their (T, T) Gram matrix; a zero vector counts as
    orthogonal."""
    norms = gram.diagonal().sqrt().clamp_min(eps)
    cosines = gram / (norms[:, None] * norms[None, :])
    n = gram.shape[0]
    return float((cosines.sum() - cosines.diagonal().sum()) / (n * (n - 1)))


@method(
    "model_stock",
    params=ModelStock,
    space="delta",
    paper="Jang et al. 2024, Model Stock: All we need is just a few fine-tuned models, ECCV, arXiv:2403.19522",
    reference="mergekit model_stock",
    traits=("symmetric", "idempotent"),
    min_models=2,
)
@sliced
def model_stock(x: SliceInputs, p: ModelStock):
    """t · mean(τ) with t = k·cosθ / ((k-1)·cosθ + 1) (Eq. 2), cosθ the mean pairwise cosine, per tensor."""
    k = x.count
    cos = mean_pairwise_cosine(x.slices.gram())
    denominator = (k - 1) * cos + 1
    # Opposed task vectors (cos <= -1/(k-1)) make Eq. 2 diverge: stay at the base there. Elsewhere the formula
    # is used as written, negative t included, as in the paper and mergekit.
    t = k * cos / denominator if denominator > 1e-6 else 0.0
    return lambda chunk, sl: chunk.mean(0).mul_(t)
