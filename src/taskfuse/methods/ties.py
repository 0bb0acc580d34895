"""TIES-Merging: trim, elect sign, disjoint merge."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, disjoint_merge, scaled
from ..ops.chunks import map_slices
from ..ops.masks import MagnitudeCut, keep_count, magnitude_cut
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


def trim_cuts(x: Inputs, density, trim: str, thresholds) -> list[MagnitudeCut]:
    """Per model, which magnitudes survive TIES step 1 ('Trim'): top `density` of the tensor, or |τ| >= a
    per-model threshold computed over the whole model (trim="model")."""
    if trim == "model":
        if thresholds is None or len(thresholds) != x.count:
            raise ValueError("trim='model' needs one threshold per model, computed by the planner over all tensors")
        return [MagnitudeCut(float(th), 1 << 62) for th in thresholds]
    d = per_model(density, x.count, "density")
    flat = x.stack.reshape(x.count, -1)
    return [magnitude_cut(flat[i], keep_count(float(d[i]), flat.shape[1])) for i in range(x.count)]


def apply_cuts(chunk: torch.Tensor, cuts: list[MagnitudeCut], start: int) -> torch.Tensor:
    """(T, C) chunk with the entries each model's cut drops set to zero."""
    return torch.stack([cut.apply(row, start) for cut, row in zip(cuts, chunk)])


def trim_stack(x: Inputs, density, trim: str = "tensor", thresholds=None) -> torch.Tensor:
    """(T, *S) trimmed task vectors (for inspection and tests; ties() itself works chunk by chunk)."""
    cuts = trim_cuts(x, density, trim, thresholds)
    return apply_cuts(x.stack.reshape(x.count, -1), cuts, 0).reshape(x.stack.shape)


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
    cuts = trim_cuts(x, p.density, p.trim, p.thresholds)

    def merge_chunk(chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        trimmed = apply_cuts(chunk, cuts, sl.start)
        return disjoint_merge(trimmed, x.weights, p.sign_election, p.elect_on, p.normalize)

    return scaled(map_slices(merge_chunk, x.stack), p.scale)
