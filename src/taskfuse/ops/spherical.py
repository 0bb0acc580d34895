"""Spherical interpolation kernels (SLERP and its Riemannian-mean generalisation)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

# Above this |cos| the two directions are treated as colinear and we interpolate linearly: the slerp formula
# divides by sin(theta) -> 0 and amplifies rounding noise.
COLINEAR_COS = 0.9995


def slerp_weights(dot: float, norm_a: float, norm_b: float, t: float, eps: float = 1e-8) -> tuple[float, float] | None:
    """(wa, wb) with slerp(a, b, t) = wa·a + wb·b (Shoemake 1985), from a·b, |a| and |b|; None where the formula is
    ill-conditioned and we interpolate linearly instead: a zero-norm input or (anti)colinear inputs.

    Directions are interpolated on the sphere of unit vectors and the result keeps the geometry of the raw
    tensors (as in the common LLM-merging practice): out = sin((1-t)θ)/sinθ · a + sin(tθ)/sinθ · b.
    """
    if norm_a < eps or norm_b < eps:
        return None
    cos = min(1.0, max(-1.0, dot / (norm_a * norm_b)))  # no normalised copies of a and b
    if abs(cos) > COLINEAR_COS:
        return None
    theta = math.acos(cos)
    s = math.sin(theta)
    return math.sin((1 - t) * theta) / s, math.sin(t * theta) / s


def log_map(base: Tensor, x: Tensor, eps: float = 1e-8) -> Tensor:
    """Tangent vector at unit `base` pointing to unit `x` with length equal to their angle."""
    cos = torch.clamp(base @ x, -1.0, 1.0)
    theta = torch.arccos(cos)
    direction = x - cos * base
    norm = direction.norm()
    return direction * (theta / norm) if norm > eps else torch.zeros_like(x)


def exp_map(base: Tensor, v: Tensor, eps: float = 1e-8) -> Tensor:
    """Point on the unit sphere reached from `base` along tangent vector `v`."""
    n = v.norm()
    return base if n < eps else torch.cos(n) * base + torch.sin(n) * (v / n)
