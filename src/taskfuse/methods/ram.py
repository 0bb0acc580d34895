"""RAM (Reinforced Agent Merging): an entry changed by one model keeps that change, an entry changed by several
takes their mean; RAM+ scales the changes only one model made up by how much of the model's update is shared."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import broadcast_weights
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Ram:
    epsilon: float = 1e-5  # |τ| at or below this counts as unchanged
    r: float = 0.0  # RAM+'s rescaling strength: 0 is RAM (mergekit's ram); mergekit's ramplus_tl uses 0.1
    alpha: float = 0.2  # RAM+'s bound on the shared-to-unique ratio


@method(
    "ram",
    params=Ram,
    space="delta",
    paper="Reinforced Agent Merging (RAM, RAM+), arXiv:2601.13572",
    reference="mergekit 0.1.5's ram and ramplus_tl (its docs/merge_methods.md; tests/fixtures/mergekit)",
    traits=("symmetric", "idempotent"),
)
def ram(x: Inputs, p: Ram):
    """Σ_t λ_t w_t τ_t over entries only model t changes, plus the mean of w_t τ_t over those several change;
    λ_t = 1 + r · clip(shared_t / unique_t, 0, α), per tensor (RAM: r = 0).

    An entry is changed by a model where |τ_t| > ε. RAM+'s ratio is counted in each tensor (mergekit's "tensor-local"
    ramplus_tl), where the paper counts it over the whole model."""
    changed = (x.stack.abs() > p.epsilon).to(x.stack.dtype)
    count = changed.sum(dim=0)
    unique = changed * (count == 1).to(changed.dtype)
    shared = changed - unique
    contributions = x.stack * broadcast_weights(x.weights, x.stack) * changed
    scale = torch.ones_like(x.weights, dtype=x.stack.dtype)
    if p.r != 0:
        ratio = shared.flatten(1).sum(dim=1) / unique.flatten(1).sum(dim=1).clamp(min=p.epsilon)
        scale = 1 + p.r * ratio.clamp(0, p.alpha)
    unique_part = (contributions * unique * broadcast_weights(scale, x.stack)).sum(dim=0)
    shared_part = (contributions * shared).sum(dim=0) / count.clamp(min=1)
    return unique_part + shared_part
