"""Multi-SLERP, mergekit's spherical average of any number of models (or of their task vectors): a weighted mean
taken on the unit sphere through its tangent space, scaled back to the models' weighted mean norm."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from ..errors import IncompatibleInputsError
from .params import STRICT
from .registry import method
from .sliced import SliceInputs, sliced

REFERENCE = ("mergekit 0.1.5's multislerp (its docs/merge_methods.md and the blog post it cites, "
             "goddard.blog/posts/multislerp-wow-what-a-cool-idea; tests/fixtures/mergekit)")
PAPER = "(no paper) mergekit's Multi-SLERP: barycentric interpolation on the hypersphere through its tangent space"


@dataclass(config=STRICT)
class MultiSlerp:
    normalize_weights: bool = True  # the weights divided by their sum first
    eps: float = 1e-8  # added to norms before dividing by them


def spherical_coefficients(gram: Tensor, weights: Tensor, p: MultiSlerp, key: str) -> Tensor:
    """(T,) float64 c with the spherical mean = Σ_t c_t x_t, from the rows' (T, T) Gram matrix (float64).

    Each row to the unit sphere, u_t = x_t / (|x_t| + eps); their weighted mean's direction m; the weighted mean of
    their components orthogonal to m (the tangent space at m) taken back onto the sphere by the exponential map;
    scaled by the weighted mean of the norms. Every vector involved is a combination of the rows, so the whole
    computation runs on T coefficients with dot products from the Gram matrix: one pass over the tensor for the
    Gram matrix, one to write the result, and no full-size temporaries. Two models whose unit vectors average to
    zero are interpolated linearly; all-zero inputs (a tensor fine-tuning left alone, as a task vector) give zero."""
    count = gram.shape[0]
    if count == 1:
        return torch.ones(1, dtype=gram.dtype)
    weights = weights.to(gram.dtype)
    if p.normalize_weights:
        weights = weights / weights.sum()
    norms = gram.diagonal().clamp(min=0).sqrt()
    to_unit = 1 / (norms + p.eps)
    units = gram * to_unit[:, None] * to_unit[None, :]  # the Gram matrix of the u_t

    def length(c: Tensor) -> Tensor:  # |Σ_t c_t u_t|
        return (c @ units @ c).clamp(min=0).sqrt()

    mean_norm = length(weights)
    if mean_norm < p.eps:
        if not bool(norms.any()):  # a tensor no model changed (mergekit raises here): zero, as each of them
            return torch.zeros(count, dtype=gram.dtype)
        if count == 2:
            return weights
        raise IncompatibleInputsError(
            f"multislerp at tensor {key!r}: the models' directions, weighted, sum to zero (opposite tensors with "
            "weights that balance), so their spherical mean has no direction. Fix: other weights, or another method.")
    mean = weights / mean_norm
    tangent = weights - (weights @ (units @ mean)) * mean  # Σ_t w_t (u_t - (u_t·m) m)
    angle = length(tangent) + p.eps
    on_sphere = mean * torch.cos(angle) + tangent * (torch.sin(angle) / angle)
    return on_sphere * to_unit * (norms * weights).sum()


def spherical_mean(x: SliceInputs, p: MultiSlerp):
    """The weighted spherical mean of the rows, each tensor flattened (see spherical_coefficients)."""
    c = spherical_coefficients(x.slices.gram(), x.weights, p, x.key).to(torch.float32)
    return lambda chunk, sl: c @ chunk


@method("multislerp", params=MultiSlerp, space="weight", paper=PAPER, reference=REFERENCE, traits=("symmetric",))
@sliced
def multislerp(x: SliceInputs, p: MultiSlerp):
    """Spherical weighted mean of the models' flattened tensors, at their weighted mean norm."""
    return spherical_mean(x, p)


@method("multislerp_task_vectors", params=MultiSlerp, space="delta", paper=PAPER, reference=REFERENCE,
        traits=("symmetric",))
@sliced
def multislerp_task_vectors(x: SliceInputs, p: MultiSlerp):
    """Spherical weighted mean of the task vectors, added to the base (mergekit's multislerp with a base_model)."""
    return spherical_mean(x, p)
