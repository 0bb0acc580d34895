"""Model Stock: interpolate the average fine-tune toward the base by the angle between task vectors."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class ModelStock:
    pass


def mean_pairwise_cosine(stack: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Average cosine over all pairs of flattened task vectors; a zero vector counts as orthogonal."""
    flat = stack.reshape(stack.shape[0], -1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(eps)
    gram = unit @ unit.T
    n = stack.shape[0]
    return (gram.sum() - gram.diagonal().sum()) / (n * (n - 1))


@method(
    "model_stock",
    params=ModelStock,
    space="delta",
    paper="Jang et al. 2024, Model Stock: All we need is just a few fine-tuned models, ECCV, arXiv:2403.19522",
    reference="mergekit model_stock",
    traits=("symmetric", "idempotent"),
    min_models=2,
)
def model_stock(x: Inputs, p: ModelStock):
    """t · mean(τ) with t = k·cosθ / ((k-1)·cosθ + 1) (Eq. 2), cosθ the mean pairwise cosine, per tensor."""
    k = x.count
    cos = mean_pairwise_cosine(x.stack)
    denominator = (k - 1) * cos + 1
    # Opposed task vectors (cos <= -1/(k-1)) make Eq. 2 diverge: stay at the base there. Elsewhere the formula
    # is used as written, negative t included, as in the paper and mergekit.
    t = torch.where(denominator > 1e-6, k * cos / denominator.clamp_min(1e-6), torch.zeros_like(cos))
    return t * x.stack.mean(0)
