"""SVD helpers for the subspace methods (TSV, Iso-C, Iso-CTS)."""
from __future__ import annotations

import torch
from torch import Tensor


def svd(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD in float64: singular vectors of nearly equal singular values are unstable in float32."""
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return u, s, vh


def nearest_orthonormal(m: Tensor) -> Tensor:
    """Polar factor P Qᵀ of m = P S Qᵀ: the closest matrix with orthonormal columns (or rows) in Frobenius norm."""
    p, _, qh = torch.linalg.svd(m, full_matrices=False)
    return p @ qh


def all_zero(stack: Tensor) -> bool:
    """True when every task vector is zero (a table no expert trained): its SVD is wasted work and its merge is 0."""
    return bool(stack.abs().amax() == 0) if stack.numel() else True


def numerical_rank(s: Tensor, shape: tuple[int, ...], largest: Tensor | float | None = None) -> int:
    """How many singular values (descending) stand above float32 round-off: torch.linalg.matrix_rank's tolerance,
    largest · max(m, n) · eps, at float32's eps, since task vectors are stored in float32 or less. Below it a
    direction is noise, not task: a sum of LoRA updates (rank r per task) has rank far below min(m, n), and the
    subspace methods must not give those noise directions the spectrum's mean. `largest`: the scale round-off is
    relative to, when `s` belongs to a remainder (a projection's residual is all noise when nothing is left)."""
    top = s[0] if largest is None and s.numel() else largest
    if s.numel() == 0 or top <= 0:
        return 0
    return int((s > top * max(shape) * torch.finfo(torch.float32).eps).sum())
