"""Masks built from magnitude cuts (top-k, Breadcrumbs bands) and L1 rescaling, for whole tensors or slices."""
from __future__ import annotations

from torch import Tensor

from .cuts import DROP_ALL, KEEP_ALL, MagnitudeCut, keep_count
from .selection import magnitude_cuts
from .slices import Slices

__all__ = ["DROP_ALL", "KEEP_ALL", "MagnitudeCut", "band_cuts", "band_magnitude_mask", "keep_count",
           "magnitude_cut", "magnitude_cuts", "rescale_to_norm", "top_magnitude_mask"]


def magnitude_cut(flat: Tensor, count: int) -> MagnitudeCut:
    """The cut keeping exactly the `count` largest |x| of 1-D `flat` (ties broken by lower index)."""
    return magnitude_cuts(Slices.of_stack(flat.reshape(1, -1)), [count])[0]


def top_magnitude_mask(x: Tensor, density: float) -> Tensor:
    """Boolean mask keeping exactly keep_count(density, numel) entries of largest |x|."""
    flat = x.reshape(-1)
    return magnitude_cut(flat, keep_count(density, flat.numel())).keep(flat.abs()).reshape(x.shape)


def band_cuts(slices: Slices, density: list[float], gamma: list[float]) -> list[tuple[MagnitudeCut, MagnitudeCut]]:
    """Model Breadcrumbs, per row: (outer, outliers) cuts; keep = outer.keep & ~outliers.keep. The `gamma` fraction
    of largest |x| is dropped as outliers and the smallest are dropped so that keep_count(density) survive; if
    density + gamma > 1 the outlier cut shrinks. Cuts are nested, so exactly keep_count entries remain."""
    n = slices.numel
    kept = [keep_count(d, n) if d < 1.0 else n for d in density]
    tops = [0 if d >= 1.0 else min(int(g * n), n - k) for d, g, k in zip(density, gamma, kept)]
    outer = magnitude_cuts(slices, [t + k for t, k in zip(tops, kept)])
    outliers = magnitude_cuts(slices, tops)
    return list(zip(outer, outliers))


def band_magnitude_mask(x: Tensor, density: float, gamma: float) -> Tensor:
    flat = x.reshape(-1)
    [(outer, outliers)] = band_cuts(Slices.of_stack(flat[None]), [density], [gamma])
    magnitudes = flat.abs()
    return (outer.keep(magnitudes) & ~outliers.keep(magnitudes)).reshape(x.shape)


def rescale_to_norm(masked: Tensor, original: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale `masked` so its L1 norm equals that of `original` (mergekit's rescale); unchanged if either is ~0."""
    before, after = original.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)
