"""Magnitude selection with exact counts and a documented tie-break: among entries equal to the cut-off value,
lower flat indices are kept. Selection runs in chunks (see chunks.py) and yields a MagnitudeCut that any slice
can apply independently."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .chunks import chunk_slices


def keep_count(density: float, numel: int) -> int:
    """Entries kept at `density`: floor(density * n), as in the TIES paper's code and PEFT, but never 0 for n > 0.

    Keeping zero entries would silently drop a whole tensor; a user asking for density > 0 wants at least one.
    """
    return max(1, min(numel, int(density * numel))) if numel else 0


@dataclass(frozen=True)
class MagnitudeCut:
    """Keep |x| > cutoff, and |x| == cutoff at flat indices <= tie_limit."""

    cutoff: float
    tie_limit: int

    def keep(self, magnitudes: Tensor, start: int = 0) -> Tensor:
        """Boolean mask for the flat slice of magnitudes beginning at flat index `start`."""
        end = start + magnitudes.numel()
        if self.tie_limit >= end - 1:
            return magnitudes >= self.cutoff
        if self.tie_limit < start:
            return magnitudes > self.cutoff
        index = torch.arange(start, end, device=magnitudes.device)
        return (magnitudes > self.cutoff) | ((magnitudes == self.cutoff) & (index <= self.tie_limit))

    def apply(self, row: Tensor, start: int = 0) -> Tensor:
        """`row` (a flat slice beginning at flat index `start`) with the entries this cut drops set to zero.

        hardshrink keeps |x| > λ in one float-to-float pass, over 10x faster here than masking through a boolean
        tensor; only the one slice holding the tie boundary takes the boolean path.
        """
        end = start + row.numel()
        if self.cutoff == 0.0:  # everything non-zero survives, and a kept or dropped zero is still zero
            return row
        if self.cutoff == float("inf"):
            return torch.zeros_like(row)
        if self.tie_limit >= end - 1:  # keep |x| >= cutoff: shrink below the next float down
            below = torch.nextafter(torch.tensor(self.cutoff, dtype=row.dtype), torch.tensor(0.0, dtype=row.dtype))
            return torch.nn.functional.hardshrink(row, float(below))
        if self.tie_limit < start:
            return torch.nn.functional.hardshrink(row, self.cutoff)
        return row * self.keep(row.abs(), start)


KEEP_ALL = MagnitudeCut(0.0, 1 << 62)


def _suffix_counts(counts: Tensor) -> Tensor:
    """at_least[b] = number of entries in buckets >= b."""
    return counts.flip(0).cumsum(0).flip(0)


def _bit_histogram(flat: Tensor, bucket_of, bins: int) -> Tensor:
    counts = torch.zeros(bins, dtype=torch.int64, device=flat.device)
    for sl in chunk_slices(flat.numel()):
        buckets = bucket_of(flat[sl].abs().view(torch.int32))
        counts += torch.bincount(buckets, minlength=bins)
    return counts


def _radix_cutoff(flat: Tensor, count: int) -> tuple[float, int, int]:
    """(v, above, equal) for the count-th largest |x| of float32 `flat`: exact radix selection on the IEEE-754
    bits (monotonic for x >= 0) with two chunked bincount passes; ~4x faster than torch.kthvalue here."""
    counts_hi = _bit_histogram(flat, lambda bits: bits >> 16, 1 << 15)
    at_least_hi = _suffix_counts(counts_hi)
    hi = int(torch.nonzero(at_least_hi >= count)[-1])
    above = int(at_least_hi[hi] - counts_hi[hi])
    # Low 16 bits of the entries in bucket `hi`: shift that bucket onto bins 1..65536 and clamp everything else
    # onto the two end bins (2x faster than selecting the bucket's entries with a boolean mask).
    offset = hi << 16
    counts_lo = _bit_histogram(flat, lambda bits: (bits - offset).clamp_(-1, 1 << 16).add_(1), (1 << 16) + 2)[1:-1]
    at_least_lo = _suffix_counts(counts_lo)
    lo = int(torch.nonzero(at_least_lo >= count - above)[-1])
    above += int(at_least_lo[lo] - counts_lo[lo])
    cutoff = torch.tensor([(hi << 16) | lo], dtype=torch.int32).view(torch.float32).item()
    return cutoff, above, int(counts_lo[lo])


def _nth_tie_index(flat: Tensor, cutoff: float, nth: int) -> int:
    """Flat index of the nth (1-based) entry with |x| == cutoff, scanning chunks in order."""
    seen = 0
    for sl in chunk_slices(flat.numel()):
        tied = torch.nonzero(flat[sl].abs() == cutoff).squeeze(1)
        if seen + tied.numel() >= nth:
            return sl.start + int(tied[nth - seen - 1])
        seen += tied.numel()
    raise AssertionError("tie count changed between passes")


def magnitude_cut(flat: Tensor, count: int) -> MagnitudeCut:
    """The cut keeping exactly the `count` largest |x| of 1-D `flat` (ties broken by lower index)."""
    n = flat.numel()
    if count >= n:
        return KEEP_ALL
    if count <= 0:
        return MagnitudeCut(float("inf"), -1)
    if flat.dtype == torch.float32:
        cutoff, above, equal = _radix_cutoff(flat, count)
    else:  # float64 (gradient checks) and others: a plain selection
        magnitudes = flat.abs()
        cutoff = float(torch.kthvalue(magnitudes, n - count + 1).values)
        above, equal = int((magnitudes > cutoff).sum()), int((magnitudes == cutoff).sum())
    quota = count - above
    return MagnitudeCut(cutoff, n if quota == equal else _nth_tie_index(flat, cutoff, quota))


def top_magnitude_mask(x: Tensor, density: float) -> Tensor:
    """Boolean mask keeping exactly keep_count(density, numel) entries of largest |x|."""
    flat = x.reshape(-1)
    return magnitude_cut(flat, keep_count(density, flat.numel())).keep(flat.abs()).reshape(x.shape)


def band_cuts(flat: Tensor, density: float, gamma: float) -> tuple[MagnitudeCut, MagnitudeCut]:
    """Model Breadcrumbs: (outer, outliers) cuts; keep = outer.keep & ~outliers.keep. The `gamma` fraction of
    largest |x| is dropped as outliers and the smallest are dropped so that keep_count(density) survive; if
    density + gamma > 1 the outlier cut shrinks. Cuts are nested, so exactly keep_count entries remain."""
    n = flat.numel()
    if density >= 1.0:
        return KEEP_ALL, MagnitudeCut(float("inf"), -1)
    k = keep_count(density, n)
    top = min(int(gamma * n), n - k)
    return magnitude_cut(flat, top + k), magnitude_cut(flat, top)


def band_magnitude_mask(x: Tensor, density: float, gamma: float) -> Tensor:
    flat = x.reshape(-1)
    outer, outliers = band_cuts(flat, density, gamma)
    magnitudes = flat.abs()
    return (outer.keep(magnitudes) & ~outliers.keep(magnitudes)).reshape(x.shape)


def rescale_to_norm(masked: Tensor, original: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale `masked` so its L1 norm equals that of `original` (mergekit's rescale); unchanged if either is ~0."""
    before, after = original.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)
