"""Multi-SLERP, mergekit's spherical average of any number of models (or of their task vectors): a weighted mean
taken on the unit sphere through its tangent space, scaled back to the models' weighted mean norm."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from ..errors import IncompatibleInputsError
from ..ops.consensus import broadcast_weights
from .inputs import Inputs
from .params import STRICT
from .registry import method

REFERENCE = ("mergekit 0.1.5's multislerp (its docs/merge_methods.md and the blog post it cites, "
             "goddard.blog/posts/multislerp-wow-what-a-cool-idea; tests/fixtures/mergekit)")
PAPER = "(no paper) mergekit's Multi-SLERP: barycentric interpolation on the hypersphere through its tangent space"


@dataclass(config=STRICT)
class MultiSlerp:
    normalize_weights: bool = True  # the weights divided by their sum first
    eps: float = 1e-8  # added to norms before dividing by them


def spherical_mean(x: Inputs, p: MultiSlerp) -> Tensor:
    """Each tensor, flattened, to the unit sphere; their weighted mean's direction m; the weighted mean of their
    components orthogonal to m (the tangent space at m) taken back onto the sphere by the exponential map; scaled
    by the weighted mean of the norms. Two models whose unit vectors average to zero are interpolated linearly;
    all-zero inputs (a tensor fine-tuning left alone, as a task vector) give zero."""
    if x.count == 1:
        return x.stack[0].clone()
    flat = x.stack.reshape(x.count, -1)
    weights = x.weights.to(flat.dtype)
    if p.normalize_weights:
        weights = weights / weights.sum()
    norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    units = flat / (norms + p.eps)
    mean = (units * weights[:, None]).sum(dim=0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < p.eps:
        if not bool(norms.any()):  # a tensor no model changed (mergekit raises here): zero, as each of them
            return torch.zeros_like(x.stack[0])
        if x.count == 2:
            return (x.stack * broadcast_weights(weights, x.stack)).sum(dim=0)
        raise IncompatibleInputsError(
            f"multislerp at tensor {x.key!r}: the models' directions, weighted, sum to zero (opposite tensors with "
            "weights that balance), so their spherical mean has no direction. Fix: other weights, or another method.")
    mean = mean / mean_norm
    tangent = ((units - (units @ mean)[:, None] * mean) * weights[:, None]).sum(dim=0)
    angle = torch.linalg.vector_norm(tangent) + p.eps
    on_sphere = mean * torch.cos(angle) + tangent * (torch.sin(angle) / angle)
    return (on_sphere * (norms[:, 0] * weights).sum()).reshape(x.stack.shape[1:])


@method("multislerp", params=MultiSlerp, space="weight", paper=PAPER, reference=REFERENCE, traits=("symmetric",))
def multislerp(x: Inputs, p: MultiSlerp):
    """Spherical weighted mean of the models' flattened tensors, at their weighted mean norm."""
    return spherical_mean(x, p)


@method("multislerp_task_vectors", params=MultiSlerp, space="delta", paper=PAPER, reference=REFERENCE,
        traits=("symmetric",))
def multislerp_task_vectors(x: Inputs, p: MultiSlerp):
    """Spherical weighted mean of the task vectors, added to the base (mergekit's multislerp with a base_model)."""
    return spherical_mean(x, p)
