"""Random drop-and-rescale of task vectors (DARE and DELLA's MagPrune)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .masks import rescale_to_norm

Rescale = Literal["inverse", "l1", "none"]


def draw_keep_mask(keep: Tensor | float, uniform: Tensor) -> Tensor:
    """Float 0/1 mask shaped like `uniform` (U[0, 1) draws), 1 with probability `keep` (a number or a tensor
    broadcastable to it).

    1[u < keep] through float ops only: 4x faster here than torch.bernoulli, whose CPU kernel draws one value at a
    time. Same distribution; different draws than PEFT's for the same seed, which is why the PEFT reference tests
    inject masks.
    """
    return (keep - uniform).sign_().clamp_min_(0.0)


def drop_with_probability(t: Tensor, keep: Tensor, rescale: Rescale, g: torch.Generator) -> Tensor:
    """Keep each entry with probability `keep` (broadcastable to t); rescale the survivors.

    "inverse" divides survivors by their keep probability (unbiased: E[out] = t; DARE Eq. 2, DELLA);
    "l1" matches the L1 norm of the input instead (mergekit's rescale); "none" leaves them as they are.
    """
    probs = torch.broadcast_to(keep, t.shape).to(t.dtype)
    # drawn on the generator's device (the CPU: Inputs.generator) and moved, so a GPU merge draws what a CPU one does
    uniform = torch.rand(t.shape, generator=g, dtype=t.dtype, device=g.device).to(t.device)
    mask = draw_keep_mask(probs, uniform)
    kept = t * mask
    if rescale == "inverse":
        return kept / probs
    if rescale == "l1":
        return rescale_to_norm(kept, t)
    return kept
