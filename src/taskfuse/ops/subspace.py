"""SVD helpers for the subspace methods (TSV, Iso-C, Iso-CTS)."""
from __future__ import annotations

import torch
from torch import Tensor


def svd(m: Tensor, largest: Tensor | float | None = None, width: int = 128,
        seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD in float64 (singular vectors of nearly equal singular values are unstable in float32), less the
    directions at or below float32 round-off, which every caller drops (`numerical_rank`; `largest` as there).

    A sum of LoRA updates has rank far below min(m, n) (six rank-8 experts: 48 of 576), and a full SVD spends
    nearly all its time on round-off. So a `width`-column random range of it is tried first: where what it
    leaves out has a Frobenius norm at or below the round-off threshold, no direction above the threshold is
    outside it, and the SVD of the projection (width × n) gives the same directions and singular values above the
    threshold as the full one, to float64 round-off (Weyl), unless one of its singular values lies within that norm
    of the threshold (then the full SVD decides which side it falls). A matrix wholly below the threshold (Iso-CTS's residual
    of a LoRA update after the common subspace) has no direction. Otherwise (a full fine-tune's update, a rank
    above `width`) the full SVD is taken; trying costs one QR of `width` columns, a few % of it."""
    m = m.double()
    if largest is not None and torch.linalg.matrix_norm(m) <= _threshold(largest, m.shape):
        return m.new_zeros(m.shape[0], 0), m.new_zeros(0), m.new_zeros(0, m.shape[1])
    if min(m.shape) > 2 * width:
        generator = torch.Generator().manual_seed(seed)
        columns = torch.randperm(m.shape[1], generator=generator)[:width]
        _, r = torch.linalg.qr(m[:, columns], mode="r")
        if r[-1, -1].abs() > 1e-3 * r.diagonal().abs().max():  # `width` independent columns: m's rank is higher
            return _full(m)
        # a Gaussian range, sharpened by two power iterations: the weakest kept directions (a LoRA sum's can sit
        # just above the threshold) come out as in the full SVD, where Iso weighs them like the strongest
        q, _ = torch.linalg.qr(m @ torch.randn(m.shape[1], width, generator=generator, dtype=torch.float64))
        for _ in range(2):
            q, _ = torch.linalg.qr(m @ (m.T @ q))
        projected = q.T @ m
        u, s, vh = torch.linalg.svd(projected, full_matrices=False)
        threshold = _threshold(s[0] if largest is None else largest, m.shape)
        left_out = torch.linalg.matrix_norm(m - q @ projected)
        # σ̂ differ from m's σ by at most what is left out: a σ̂ that close to the threshold could fall on either
        # side of it in the full SVD, and Iso gives every direction kept the same weight, so the full SVD decides
        if left_out <= threshold and not bool(((s - threshold).abs() <= left_out).any()):
            return q @ u, s, vh
    return _full(m)


def _full(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return u, s, vh


def _threshold(top: Tensor | float, shape: tuple[int, ...]) -> Tensor | float:
    """Singular values at or below this are float32 round-off (torch.linalg.matrix_rank's tolerance at float32)."""
    return top * max(shape) * torch.finfo(torch.float32).eps


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
    return int((s > _threshold(top, shape)).sum())
