"""Spherical interpolation (SLERP) coefficients."""
from __future__ import annotations

import math


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
