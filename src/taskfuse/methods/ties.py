"""TIES-Merging: trim, elect sign, disjoint merge."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, disjoint_merge_, scaled
from ..ops.masks import MagnitudeCut, keep_count, magnitude_cuts
from .inputs import Inputs
from .params import STRICT, PerModelDensity, per_model
from .registry import method
from .sliced import SliceInputs, sliced

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


def trim_cuts(x: SliceInputs, density, trim: str, thresholds) -> list[MagnitudeCut]:
    """Per model, which magnitudes survive TIES step 1 ('Trim'): top `density` of the tensor, or |τ| >= a
    per-model threshold computed over the whole model (trim="model")."""
    if trim == "model":
        if thresholds is None or len(thresholds) != x.count:
            raise ValueError("trim='model' needs one threshold per model, computed by the planner over all tensors")
        return [MagnitudeCut(float(th), 1 << 62) for th in thresholds]
    d = per_model(density, x.count, "density")
    return magnitude_cuts(x.slices, [keep_count(float(d[i]), x.slices.numel) for i in range(x.count)])


def apply_cuts(chunk: torch.Tensor, cuts: list[MagnitudeCut], start: int) -> torch.Tensor:
    """(T, C) chunk with the entries each model's cut drops set to zero."""
    return torch.stack([cut.apply(row, start) for cut, row in zip(cuts, chunk)])


def trim_stack(x: Inputs, density, trim: str = "tensor", thresholds=None) -> torch.Tensor:
    """(T, *S) trimmed task vectors (for inspection and tests; ties() itself works slice by slice)."""
    cuts = trim_cuts(SliceInputs.of(x), density, trim, thresholds)
    return apply_cuts(x.stack.reshape(x.count, -1), cuts, 0).reshape(x.stack.shape)


@method(
    "ties",
    params=Ties,
    space="delta",
    paper="Yadav et al. 2023, TIES-Merging, NeurIPS, arXiv:2306.01708",
    reference="peft.utils.merge_utils.ties; mergekit ties; github.com/prateeky2806/ties-merging",
    traits=("symmetric", "idempotent"),
)
@sliced
def ties(x: SliceInputs, p: Ties):
    """Trim each task vector to its top-`density` magnitudes, elect a sign per entry, average the agreeing ones."""
    cuts = trim_cuts(x, p.density, p.trim, p.thresholds)

    def merge_chunk(chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        trimmed = apply_cuts(chunk, cuts, sl.start)
        return scaled(disjoint_merge_(trimmed, x.weights, p.sign_election, p.elect_on, p.normalize), p.scale)

    return merge_chunk
