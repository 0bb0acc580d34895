"""SCE (Select, Calculate, Erase; FuseChat): per tensor, coefficients from how much each task vector moves it."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from ..ops.consensus import broadcast_weights, elect_sign, scaled
from ..ops.cuts import MagnitudeCut
from ..ops.selection import magnitude_cuts
from ..ops.slices import Slices
from .params import STRICT, Fraction
from .registry import method
from .sliced import SliceInputs, sliced


@dataclass(config=STRICT)
class Sce:
    """Defaults follow the authors' released code (the FuseChat repository's merge method). mergekit's sce is
    selection="task_vectors", coefficient_floor=1e-6, and ignores the models' weights."""

    select_topk: Fraction = 1.0  # fraction of the entries (those whose variance across models is not 0) selected
    # "coefficients": the selection picks the entries the coefficients are calculated from, and every entry is
    # merged (the authors' code); "task_vectors": the unselected entries are dropped from every task vector first
    selection: Literal["coefficients", "task_vectors"] = "coefficients"
    # the coefficients are uniform where the models' mean squared selected entries sum to no more than this
    coefficient_floor: float = 0.0
    scale: float = 1.0  # λ on the merged task vector


def variance(chunk: Tensor) -> Tensor:
    """(C,) each entry's variance across the models, two-pass: torch.var's one-pass (Welford) reduction over the
    models measured 20x slower here, and both are within float32 rounding of a float64 variance."""
    centered = chunk - chunk.mean(dim=0)
    return centered.square_().mean(dim=0)


def variance_selection(slices: Slices, fraction: float) -> tuple[Tensor, MagnitudeCut]:
    """Each entry's variance across the models (one float32 tensor's size, so no pass recomputes it) and the cut
    on it that keeps the `fraction` of the entries with the highest, counted among the entries whose variance is
    not zero ("Select"); ties at the cut-off go to lower indices."""
    spread = torch.cat(slices.map(lambda chunk, sl: variance(chunk)))
    keep = int(fraction * int(torch.count_nonzero(spread)))
    return spread, magnitude_cuts(Slices.of_stack(spread[None]), [keep])[0]


def coefficients(energy: Tensor, floor: float) -> Tensor:
    """(T,) each model's share of `energy`, its mean squared selected entry ("Calculate"); uniform where they sum
    to no more than `floor` (all zero, by default)."""
    total = float(energy.sum())
    if total <= floor:
        return torch.full_like(energy, 1.0 / energy.numel())
    return energy / total


@method(
    "sce",
    params=Sce,
    space="delta",
    paper="Wan et al. 2024, FuseChat: Knowledge Fusion of Chat Models, arXiv:2408.07990 (SCE merging)",
    reference="the authors' merge method (github.com/fanqiwan/FuseAI, FuseChat/mergekit/merge_methods/"
              "sce_merging.py); mergekit 0.1.5's sce (tests/fixtures/mergekit)",
    traits=("symmetric", "idempotent"),
)
@sliced
def sce(x: SliceInputs, p: Sce):
    """λ · Σ_t η_t m_t τ_t / Σ_t η_t m_t, η_t ∝ w_t · mean(τ̃_t²) over the top-variance entries τ̃, m_t where τ_t
    has the sign of Σ τ.

    "Erase" keeps, per entry, the task vectors whose sign agrees with the sign of their sum (a zero sum elects +),
    and the agreeing ones are averaged with their coefficients. The models' weights multiply the coefficients.
    Passes over the tensor: the variance cut-off (when selecting), the energies, the merge."""
    if x.slices.numel == 0:  # nothing to select or weigh
        return lambda chunk, sl: chunk[0]
    spread, cut = variance_selection(x.slices, p.select_topk) if p.select_topk < 1 else (None, None)

    def selected(chunk: Tensor, sl: slice) -> Tensor:
        return chunk if cut is None else chunk.mul_(cut.keep(spread[sl], sl.start))

    energy = x.slices.sum(lambda chunk, sl: selected(chunk, sl).square().sum(dim=1, dtype=torch.float64),
                          flags_nonfinite=True) / max(x.slices.numel, 1)
    eta = coefficients(energy, p.coefficient_floor).to(torch.float32) * x.weights.to(torch.float32)

    def merge_chunk(chunk: Tensor, sl: slice) -> Tensor:
        if p.selection == "task_vectors":
            chunk = selected(chunk, sl)
        agreeing = (chunk.sign() == elect_sign(chunk, "mass")).to(chunk.dtype)
        agreeing.mul_(broadcast_weights(eta, chunk))
        total = agreeing.sum(dim=0)
        merged = chunk.mul_(agreeing).sum(dim=0)
        return scaled(merged.div_(torch.where(total == 0, torch.ones_like(total), total)), p.scale)

    return merge_chunk
