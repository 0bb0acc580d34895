"""NuSLERP, mergekit's SLERP of two models by their weights, over whole tensors or their rows or columns, of the
weights themselves or (nuslerp_task_vectors) of their task vectors."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from .inputs import Inputs
from .params import STRICT
from .registry import method

REFERENCE = ("mergekit 0.1.5's nuslerp (its docs/merge_methods.md; tests/fixtures/mergekit): a method of mergekit's "
             "own, without a paper")
NORM_FLOOR = 1e-7  # a vector's norm is taken as at least this when it is normalised
COLINEAR = 1e-8  # vectors with 1 - cos²θ at most COLINEAR² are interpolated linearly


@dataclass(config=STRICT)
class NuSlerp:
    # "flat": each tensor is one vector (mergekit's nuslerp_flatten, its default); "rows": each row W[i, :] is
    # interpolated on its own (nuslerp_flatten: false); "columns": each column W[:, j] (and nuslerp_row_wise: true)
    vectors: Literal["flat", "rows", "columns"] = "flat"


def spherical_by_weights(x: Inputs, p: NuSlerp) -> Tensor:
    """The SLERP of the two rows of `x.stack` at t = w₂ / (w₁ + w₂) (0.5 where the weights sum to 0), vector by
    vector: sin((1-t)θ)/sin θ · a + sin(tθ)/sin θ · b, θ the angle between a and b; (1-t)a + tb where they are
    (nearly) colinear. The vectors keep their lengths: only the angle is normalised."""
    w1, w2 = (float(w) for w in x.weights)
    t = 0.5 if abs(w1 + w2) < 1e-6 else w2 / (w1 + w2)
    a, b = x.stack[0], x.stack[1]
    if p.vectors == "flat":
        a, b = a.reshape(-1), b.reshape(-1)
    elif p.vectors == "columns":
        a, b = a.transpose(0, -1), b.transpose(0, -1)
    # the angle from one product and the two norms, and the result as two scaled vectors: a vector's coefficients
    # are scalars, so no unit vectors or intermediate mixtures are formed (each would be a whole tensor)
    dot = torch.dot(a, b).reshape(1) if a.dim() == 1 else torch.einsum("...i,...i->...", a, b).unsqueeze(-1)
    norm_a, norm_b = (torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp(min=NORM_FLOOR) for v in (a, b))
    cos = (dot / (norm_a * norm_b)).clamp(-1, 1)
    colinear = (1 - cos.square()) <= COLINEAR ** 2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    sin = torch.where(colinear, torch.ones_like(theta), torch.sin(theta))
    to_a = torch.where(colinear, torch.full_like(theta, 1 - t), torch.sin((1 - t) * theta) / sin)
    to_b = torch.where(colinear, torch.full_like(theta, t), torch.sin(t * theta) / sin)
    out = (a * to_a).addcmul_(b, to_b)
    if p.vectors == "columns":
        out = out.transpose(0, -1)
    return out.reshape(x.stack.shape[1:])


@method(
    "nuslerp",
    params=NuSlerp,
    space="weight",
    paper="(no paper) mergekit's NuSLERP: SLERP at t = w₂/(w₁+w₂), per tensor, row or column",
    reference=REFERENCE,
    traits=("symmetric", "idempotent"),
    min_models=2,
    max_models=2,
)
def nuslerp(x: Inputs, p: NuSlerp):
    """SLERP of the two models' weights at t = w₂/(w₁+w₂), whole tensors or each row or column on its own."""
    return spherical_by_weights(x, p)


@method(
    "nuslerp_task_vectors",
    params=NuSlerp,
    space="delta",
    paper="(no paper) mergekit's NuSLERP with a base model: SLERP of the two task vectors",
    reference=REFERENCE,
    traits=("symmetric", "idempotent"),
    min_models=2,
    max_models=2,
)
def nuslerp_task_vectors(x: Inputs, p: NuSlerp):
    """SLERP of the two task vectors at t = w₂/(w₁+w₂), added to the base (mergekit's nuslerp with a base_model)."""
    return spherical_by_weights(x, p)
