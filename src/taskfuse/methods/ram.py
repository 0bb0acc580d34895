"""RAM (Reinforced Agent Merging): an entry changed by one model keeps that change, an entry changed by several
takes their mean; RAM+ scales the changes only one model made up by how much of the model's update is shared."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from ..ops.consensus import broadcast_weights
from .params import STRICT
from .registry import method
from .sliced import SliceInputs, sliced


@dataclass(config=STRICT)
class Ram:
    epsilon: float = 1e-5  # |τ| at or below this counts as unchanged
    r: float = 0.0  # RAM+'s rescaling strength: 0 is RAM (mergekit's ram); mergekit's ramplus_tl uses 0.1
    alpha: float = 0.2  # RAM+'s bound on the shared-to-unique ratio


def shared_and_unique(chunk: Tensor, epsilon: float) -> Tensor:
    """(2, T) int64: per model, the slice's entries it changes together with another model, and alone."""
    changed = chunk.abs() > epsilon
    alone = changed & (changed.sum(dim=0) == 1)
    unique = alone.sum(dim=1)
    return torch.stack([changed.sum(dim=1) - unique, unique])


@method(
    "ram",
    params=Ram,
    space="delta",
    paper="Reinforced Agent Merging (RAM, RAM+), arXiv:2601.13572",
    reference="mergekit 0.1.5's ram and ramplus_tl (its docs/merge_methods.md; tests/fixtures/mergekit)",
    traits=("symmetric", "idempotent"),
)
@sliced
def ram(x: SliceInputs, p: Ram):
    """Σ_t λ_t w_t τ_t over entries only model t changes, plus the mean of w_t τ_t over those several change;
    λ_t = 1 + r · clip(shared_t / unique_t, 0, α), per tensor (RAM: r = 0).

    An entry is changed by a model where |τ_t| > ε. RAM+'s ratio is counted in each tensor (mergekit's "tensor-local"
    ramplus_tl), where the paper counts it over the whole model, in one pass before the merge."""
    scale = None
    if p.r != 0 and x.slices.numel:
        shared, unique = x.slices.sum(lambda chunk, sl: shared_and_unique(chunk, p.epsilon)).to(torch.float32)
        scale = 1 + p.r * (shared / unique.clamp(min=p.epsilon)).clamp(0, p.alpha)

    def merge_chunk(chunk: Tensor, sl: slice) -> Tensor:
        # an entry one model changed is the mean of one contribution, so RAM is the mean of the changed entries;
        # RAM+ takes the scaled sum instead where exactly one model changed the entry
        changed = chunk.abs() > p.epsilon
        contributions = chunk.mul_(broadcast_weights(x.weights, chunk)).mul_(changed)
        count = changed.sum(dim=0, dtype=chunk.dtype)
        mean = contributions.sum(dim=0).div_(count.clamp(min=1))
        if scale is None:
            return mean
        alone = (contributions * broadcast_weights(scale, chunk)).sum(dim=0)
        return torch.where(count == 1, alone, mean)

    return merge_chunk
