"""Karcher (Riemannian) mean of the models' weight directions on the unit sphere."""
from __future__ import annotations

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from typing import Annotated

from .params import STRICT
from .registry import method
from .sliced import SliceInputs, sliced


@dataclass(config=STRICT)
class Karcher:
    max_iter: Annotated[int, Field(ge=1)] = 10
    tol: Annotated[float, Field(gt=0)] = 1e-5


def karcher_coefficients(gram: torch.Tensor, alphas: torch.Tensor, p: Karcher, eps: float = 1e-12) -> torch.Tensor:
    """c with μ = Σ_i c_i u_i for the weighted Karcher mean μ of unit vectors u_i whose Gram matrix is `gram`.

    The fixed-point iteration μ ← exp_μ(Σ α_i log_μ(u_i)) (Karcher 1977; Buss & Fillmore 2001) never leaves the
    span of the u_i, so it runs on T coefficients with dot products from the Gram matrix (float64) instead of on
    full-size vectors: one pass over the tensor for the Gram matrix, one to write the mean.
    """
    count = gram.shape[0]

    def norm(a: torch.Tensor) -> torch.Tensor:
        return (a @ gram @ a).clamp_min(0.0).sqrt()

    c = alphas / norm(alphas).clamp_min(eps)
    basis = torch.eye(count, dtype=gram.dtype)
    for _ in range(p.max_iter):
        step = torch.zeros(count, dtype=gram.dtype)
        for i in range(count):  # log_μ(u_i): the tangent at μ toward u_i, as long as their angle
            cos = (gram[i] @ c).clamp(-1.0, 1.0)
            direction = basis[i] - cos * c
            length = norm(direction)
            if length > 1e-8:
                step += alphas[i] * direction * (torch.arccos(cos) / length)
        size = norm(step)
        if size < p.tol:
            break
        c = torch.cos(size) * c + torch.sin(size) * (step / size)  # exp_μ(step)
    return c


@method(
    "karcher",
    params=Karcher,
    space="weight",
    paper="Karcher 1977, Riemannian center of mass; Buss & Fillmore 2001, Spherical averages",
    reference="mergekit karcher",
    traits=("symmetric", "idempotent"),
)
@sliced
def karcher(x: SliceInputs, p: Karcher):
    """Weighted Karcher mean of directions, scaled by the weighted mean norm; zero tensors carry no direction."""
    gram = x.slices.gram()
    norms = gram.diagonal().sqrt()
    keep = norms > 1e-12
    if not keep.any():
        return lambda chunk, sl: torch.zeros_like(chunk[0])
    weights = x.weights.double()[keep]
    alphas = weights / weights.sum()
    c = karcher_coefficients(gram[keep][:, keep] / (norms[keep, None] * norms[None, keep]), alphas, p)
    coefficients = torch.zeros(x.count, dtype=torch.float64)  # out = Σ_j coefficients_j · x_j
    coefficients[keep] = c / norms[keep] * (alphas * norms[keep]).sum()
    return lambda chunk, sl: coefficients.to(chunk.dtype) @ chunk
