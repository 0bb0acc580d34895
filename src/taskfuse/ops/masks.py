"""Magnitude masks with exact counts and a documented tie-break."""
from __future__ import annotations

import torch
from torch import Tensor


def keep_count(density: float, numel: int) -> int:
    """Entries kept at `density`: floor(density * n), as in the TIES paper's code and PEFT, but never 0 for n > 0.

    Keeping zero entries would silently drop a whole tensor; a user asking for density > 0 wants at least one.
    """
    return max(1, min(numel, int(density * numel))) if numel else 0


def largest_mask(values: Tensor, count: int) -> Tensor:
    """Flat boolean mask of the `count` largest entries of flat `values`; among entries equal to the cut-off value,
    the lower flat indices are kept. O(n) selection (kthvalue), no full sort.

    Masks are nested: largest_mask(v, a) ⊆ largest_mask(v, b) for a ≤ b, which the band mask relies on.
    """
    n = values.numel()
    if count >= n:
        return torch.ones_like(values, dtype=torch.bool)
    if count <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    cutoff = torch.kthvalue(values, n - count + 1).values  # the count-th largest value
    above = values > cutoff
    equal = values == cutoff
    still_needed = count - int(above.sum())
    return above | (equal & (torch.cumsum(equal, 0) <= still_needed))


def top_magnitude_mask(x: Tensor, density: float) -> Tensor:
    """Boolean mask keeping exactly keep_count(density, numel) entries of largest |x|.

    Ties at the threshold are broken by flat index (earlier entries kept), so the count is exact and deterministic.
    """
    if density >= 1.0:
        return torch.ones_like(x, dtype=torch.bool)
    return largest_mask(x.abs().reshape(-1), keep_count(density, x.numel())).reshape(x.shape)


def band_magnitude_mask(x: Tensor, density: float, gamma: float) -> Tensor:
    """Model Breadcrumbs mask: drop the `gamma` fraction of largest |x| (outliers) and the smallest, keep `density`.

    If density + gamma > 1 the outlier cut shrinks so that exactly keep_count(density) entries survive.
    """
    n = x.numel()
    if density >= 1.0:
        return torch.ones_like(x, dtype=torch.bool)
    k = keep_count(density, n)
    top = min(int(gamma * n), n - k)
    a = x.abs().reshape(-1)
    return (largest_mask(a, top + k) & ~largest_mask(a, top)).reshape(x.shape)


def rescale_to_norm(masked: Tensor, original: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale `masked` so its L1 norm equals that of `original` (mergekit's rescale); unchanged if either is ~0."""
    before, after = original.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)
