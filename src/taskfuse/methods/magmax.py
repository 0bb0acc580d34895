"""MagMax: each entry taken from the task vector that moves it furthest."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import broadcast_weights, scaled
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class MagMax:
    scale: float = 1.0  # λ on the selected task vector


@method(
    "magmax",
    params=MagMax,
    space="delta",
    paper="Marczak et al. 2024, MagMax: Leveraging Model Merging for Seamless Continual Learning, ECCV, "
    "arXiv:2407.06322",
    reference="fusion_bench.method.magmax (FusionBench 0.2.33); github.com/danielm1405/magmax (merge_max_abs)",
    traits=("symmetric", "chunkable", "idempotent"),
)
def magmax(x: Inputs, p: MagMax):
    """λ · τ_{t*}[j] per entry j, t* = argmax_t |w_t τ_t[j]|.

    Where a positive and a negative entry tie in magnitude, the positive one is kept: the reference keeps the later
    model's, which makes the merge depend on the models' order."""
    weighted = x.stack * broadcast_weights(x.weights, x.stack)
    smallest, largest = torch.aminmax(weighted, dim=0)
    return scaled(torch.where(largest >= -smallest, largest, smallest), p.scale)
