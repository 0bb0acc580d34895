"""Spherical interpolation kernels (SLERP and its Riemannian-mean generalisation)."""
from __future__ import annotations

import torch
from torch import Tensor

from .chunks import chunk_slices

# Above this |cos| the two directions are treated as colinear and we interpolate linearly: the slerp formula
# divides by sin(theta) -> 0 and amplifies rounding noise.
COLINEAR_COS = 0.9995


def slerp(a: Tensor, b: Tensor, t: float, eps: float = 1e-8) -> Tensor:
    """Spherical linear interpolation between flat tensors a (t=0) and b (t=1) (Shoemake 1985).

    Directions are interpolated on the sphere of unit vectors and the result keeps the geometry of the raw
    tensors (as in the common LLM-merging practice): out = sin((1-t)θ)/sinθ · a + sin(tθ)/sinθ · b.
    Falls back to lerp for (anti)colinear inputs or a zero-norm input.
    """
    na, nb = a.norm(), b.norm()
    if na < eps or nb < eps:
        return torch.lerp(a, b, t)
    cos = torch.clamp((a @ b) / (na * nb), -1.0, 1.0)  # no normalised copies of a and b
    if cos.abs() > COLINEAR_COS:
        return torch.lerp(a, b, t)
    theta = torch.arccos(cos)
    s = torch.sin(theta)
    return blend(a, b, torch.sin((1 - t) * theta) / s, torch.sin(t * theta) / s)


def blend(a: Tensor, b: Tensor, wa: Tensor, wb: Tensor) -> Tensor:
    """wa·a + wb·b for flat a, b, slice by slice (no full-size temporaries; see chunks.py)."""
    out = torch.empty_like(a)
    for sl in chunk_slices(a.numel()):
        out[sl] = a[sl] * wa + b[sl] * wb  # slice assignment, not out=, so autograd still flows
    return out


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
