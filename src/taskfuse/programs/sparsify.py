"""Task vectors pre-processed before their coefficients are learned: AdaMerging++ learns over TIES-Merging's
trimmed, sign-agreeing vectors instead of the raw ones (Yang et al. 2024, arXiv:2310.02575, Sec. 4).

With τ'_t = τ_t trimmed to its top-`density` magnitudes per tensor and zeroed where its sign disagrees with the
elected (mass) sign, Σ_t λ_t τ'_t is exactly TIES with normalize="none" and weights λ: the learned merge replays as
a ties spec with per-tensor weights, through the same registered functions.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..methods.inputs import Inputs
from ..methods.ties import trim_stack
from ..ops.consensus import elect_sign


def ties_vectors(vectors: list[dict[str, Tensor]], density: float) -> list[dict[str, Tensor]]:
    """τ'_t for every tensor the vectors share (each tensor's T vectors trimmed and sign-masked together)."""
    out: list[dict[str, Tensor]] = [{} for _ in vectors]
    for name in vectors[0]:
        stack = torch.stack([v[name].float() for v in vectors])  # (T, *S)
        trimmed = trim_stack(Inputs.of(stack, key=name), density)
        sign = elect_sign(trimmed, "mass")  # (*S)
        agreeing = trimmed * (trimmed * sign > 0)  # zeros never agree, as in the disjoint merge
        for t, row in enumerate(agreeing):
            out[t][name] = row.to(vectors[t][name].dtype)
    return out


def replay_method(density: float | None) -> tuple[str, dict]:
    """The registered method and parameters whose weighted merge equals Σ λ_t τ'_t (or Σ λ_t τ_t)."""
    if density is None:
        return "task_arithmetic", {"scale": 1.0}
    return "ties", {"density": density, "normalize": "none", "scale": 1.0}
