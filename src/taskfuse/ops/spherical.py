"""Spherical interpolation (SLERP) coefficients."""
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


def iterative_slerp_coefficients(gram: Tensor, weights: Tensor) -> Tensor:
    """c with v = Σ_i c_i x_i for the iterated SLERP of rows x_1..x_T whose Gram matrix is `gram`:
    v₁ = x₁, v_k = slerp(v_{k-1}, x_k, t_k) with t_k = w_k / (w_1 + … + w_k), so that every row's share of v
    follows its weight as in a weighted average (the linear version of this recursion is exactly Σ w_i x_i / Σ w).

    It runs on T coefficients with dot products from the Gram matrix, never on the full-size rows, and it is made
    of torch operations on `gram` and `weights`: the streaming engine calls it in float64 on a tensor's Gram matrix
    and Self Positioning differentiates through it to learn the weights. Zero-norm or (anti)colinear steps
    interpolate linearly, as `slerp_weights` does. Rows with zero weight are skipped.
    """
    count = gram.shape[0]
    basis = torch.eye(count, dtype=gram.dtype, device=gram.device)
    weights = weights.to(gram.dtype)
    c = torch.zeros(count, dtype=gram.dtype, device=gram.device)
    total, values = None, weights.detach().tolist()  # the branches read values; gradients flow through the math
    for k in range(count):
        if values[k] == 0.0:
            continue
        if total is None:  # the first row with weight: v = x_k
            total, c = weights[k], basis[k]
            continue
        total = total + weights[k]
        t = weights[k] / total
        norm_v = (c @ gram @ c).clamp_min(0.0).sqrt()
        norm_x = gram[k, k].clamp_min(0.0).sqrt()
        if float(norm_v.detach()) < 1e-8 or float(norm_x.detach()) < 1e-8:
            c = (1 - t) * c + t * basis[k]
            continue
        cos = ((gram[k] @ c) / (norm_v * norm_x)).clamp(-1.0, 1.0)
        if abs(float(cos.detach())) > COLINEAR_COS:
            c = (1 - t) * c + t * basis[k]
            continue
        theta = torch.arccos(cos)
        s = torch.sin(theta)
        c = torch.sin((1 - t) * theta) / s * c + torch.sin(t * theta) / s * basis[k]
    return c
