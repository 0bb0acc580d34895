"""Karcher (Riemannian) mean of the models' weight directions on the unit sphere."""
from __future__ import annotations

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from typing import Annotated

from ..ops.spherical import exp_map, log_map
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Karcher:
    max_iter: Annotated[int, Field(ge=1)] = 10
    tol: Annotated[float, Field(gt=0)] = 1e-5


def karcher_direction(units: torch.Tensor, alphas: torch.Tensor, p: Karcher) -> torch.Tensor:
    """Fixed-point iteration μ ← exp_μ(Σ α_i log_μ(u_i)) (Karcher 1977; Buss & Fillmore 2001)."""
    mu = (alphas[:, None] * units).sum(0)
    mu = mu / mu.norm().clamp_min(1e-12)
    for _ in range(p.max_iter):
        step = sum(a * log_map(mu, u) for a, u in zip(alphas, units))
        if step.norm() < p.tol:
            break
        mu = exp_map(mu, step)
    return mu


@method(
    "karcher",
    params=Karcher,
    space="weight",
    paper="Karcher 1977, Riemannian center of mass; Buss & Fillmore 2001, Spherical averages",
    reference="mergekit karcher",
    traits=("symmetric", "idempotent"),
)
def karcher(x: Inputs, p: Karcher):
    """Weighted Karcher mean of directions, scaled by the weighted mean norm; zero tensors carry no direction."""
    flat = x.stack.reshape(x.count, -1)
    norms = flat.norm(dim=1)
    keep = norms > 1e-12
    if not keep.any():
        return torch.zeros_like(x.stack[0])
    alphas = x.weights[keep] / x.weights[keep].sum()
    mu = karcher_direction(flat[keep] / norms[keep, None], alphas, p)
    return (mu * (alphas * norms[keep]).sum()).reshape(x.stack.shape[1:])
