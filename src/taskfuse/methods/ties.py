"""TIES-Merging: trim, elect sign, disjoint merge."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, disjoint_merge, scaled
from ..ops.masks import top_magnitude_mask
from .inputs import Inputs
from .params import STRICT, PerModelDensity, per_model
from .registry import method

ElectOn = Literal["raw", "weighted"]


@dataclass(config=STRICT)
class Ties:
    """Defaults follow the paper and PEFT. mergekit's ties is elect_on="weighted", normalize="weights"."""

    density: PerModelDensity = 0.2  # fraction of each task vector kept by magnitude ("k" in the paper)
    scale: float = 1.0  # λ
    sign_election: SignElection = "mass"  # "mass": sign of Σ τ (paper); "count": sign of Σ sign(τ)
    elect_on: ElectOn = "raw"
    normalize: Normalize = "count"  # "count": mean of agreeing (paper/PEFT); "weights": by Σ agreeing w (mergekit)
    trim: Literal["tensor", "model"] = "tensor"  # top-k within each tensor, or one threshold per whole model
    thresholds: tuple[float, ...] | None = None  # per-model |τ| cut-offs; filled in by the planner for trim="model"


def trim_stack(x: Inputs, density, trim: str, thresholds) -> torch.Tensor:
    """(T, *S) task vectors with all but the largest-magnitude entries zeroed (TIES step 1, 'Trim')."""
    if trim == "model":
        if thresholds is None or len(thresholds) != x.count:
            raise ValueError("trim='model' needs one threshold per model, computed by the planner over all tensors")
        return torch.stack([t * (t.abs() >= th) for t, th in zip(x.stack, thresholds)])
    d = per_model(density, x.count, "density")
    return torch.stack([t * top_magnitude_mask(t, float(d[i])) for i, t in enumerate(x.stack)])


@method(
    "ties",
    params=Ties,
    space="delta",
    paper="Yadav et al. 2023, TIES-Merging, NeurIPS, arXiv:2306.01708",
    reference="peft.utils.merge_utils.ties; mergekit ties; github.com/prateeky2806/ties-merging",
    traits=("symmetric", "idempotent"),
)
def ties(x: Inputs, p: Ties):
    """Trim each task vector to its top-`density` magnitudes, elect a sign per entry, average the agreeing ones."""
    trimmed = trim_stack(x, p.density, p.trim, p.thresholds)
    return scaled(disjoint_merge(trimmed, x.weights, p.sign_election, p.elect_on, p.normalize), p.scale)
