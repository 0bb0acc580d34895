"""Magnitude masks with exact counts and a documented tie-break."""
from __future__ import annotations

import torch
from torch import Tensor


def keep_count(density: float, numel: int) -> int:
    """Entries kept at `density`: floor(density * n), as in the TIES paper's code and PEFT, but never 0 for n > 0.

    Keeping zero entries would silently drop a whole tensor; a user asking for density > 0 wants at least one.
    """
    return max(1, min(numel, int(density * numel))) if numel else 0


def _rank_descending(x: Tensor) -> Tensor:
    """Rank of each entry of flat `x` by value descending; ties broken by lower flat index first (stable sort)."""
    order = torch.sort(x, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=x.device)
    return ranks


def top_magnitude_mask(x: Tensor, density: float) -> Tensor:
    """Boolean mask keeping exactly keep_count(density, numel) entries of largest |x|.

    Ties at the threshold are broken by flat index (earlier entries kept), so the count is exact and deterministic.
    """
    if density >= 1.0:
        return torch.ones_like(x, dtype=torch.bool)
    k = keep_count(density, x.numel())
    ranks = _rank_descending(x.abs().reshape(-1))
    return (ranks < k).reshape(x.shape)


def band_magnitude_mask(x: Tensor, density: float, gamma: float) -> Tensor:
    """Model Breadcrumbs mask: drop the `gamma` fraction of largest |x| (outliers) and the smallest, keep `density`.

    If density + gamma > 1 the outlier cut shrinks so that exactly keep_count(density) entries survive.
    """
    n = x.numel()
    if density >= 1.0:
        return torch.ones_like(x, dtype=torch.bool)
    k = keep_count(density, n)
    top = min(int(gamma * n), n - k)
    ranks = _rank_descending(x.abs().reshape(-1))
    return ((ranks >= top) & (ranks < top + k)).reshape(x.shape)


def rescale_to_norm(masked: Tensor, original: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale `masked` so its L1 norm equals that of `original` (mergekit's rescale); unchanged if either is ~0."""
    before, after = original.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)
