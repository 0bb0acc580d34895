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
