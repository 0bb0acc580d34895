"""Random drop-and-rescale of task vectors (DARE and DELLA's MagPrune)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .chunks import chunk_slices
from .masks import rescale_to_norm

Rescale = Literal["inverse", "l1", "none"]


def draw_keep_mask(row: Tensor, density: float, g: torch.Generator) -> Tensor:
    """Bernoulli(density) keep mask shaped like `row`, drawn as PEFT draws it (a full probability tensor)."""
    return torch.bernoulli(torch.full_like(row, density), generator=g)


def l1_rescale_factors(flat: Tensor, densities: Tensor, gens: list[torch.Generator]) -> list[float]:
    """Per model, ‖τ‖₁ / ‖τ ⊙ mask‖₁ for the masks the generators are about to draw (mergekit's rescale).

    The generators are rewound afterwards, so the merge pass draws exactly the same masks.
    """
    states = [g.get_state() for g in gens]
    total = torch.zeros(flat.shape[0], dtype=torch.float64)
    kept = torch.zeros(flat.shape[0], dtype=torch.float64)
    for sl in chunk_slices(flat.shape[1]):
        for i, row in enumerate(flat[:, sl]):
            if densities[i] < 1:
                total[i] += float(row.abs().sum())
                kept[i] += float((row * draw_keep_mask(row, float(densities[i]), gens[i])).abs().sum())
    for g, state in zip(gens, states):
        g.set_state(state)
    return [float(t / k) if t > 1e-12 and k > 1e-12 else 1.0 for t, k in zip(total, kept)]


def drop_with_probability(t: Tensor, keep: Tensor, rescale: Rescale, g: torch.Generator) -> Tensor:
    """Keep each entry with probability `keep` (broadcastable to t); rescale the survivors.

    "inverse" divides survivors by their keep probability (unbiased: E[out] = t; DARE Eq. 2, DELLA);
    "l1" matches the L1 norm of the input instead (mergekit's rescale); "none" leaves them as they are.
    """
    probs = torch.broadcast_to(keep, t.shape).to(t.dtype).contiguous()
    mask = torch.bernoulli(probs, generator=g)
    kept = t * mask
    if rescale == "inverse":
        return kept / probs
    if rescale == "l1":
        return rescale_to_norm(kept, t)
    return kept
