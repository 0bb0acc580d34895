"""Random drop-and-rescale of task vectors (DARE and DELLA's MagPrune)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .masks import rescale_to_norm

Rescale = Literal["inverse", "l1", "none"]


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
