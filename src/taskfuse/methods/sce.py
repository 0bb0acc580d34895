"""SCE (Select, Calculate, Erase; FuseChat): per tensor, coefficients from how much each task vector moves it."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from ..ops.consensus import broadcast_weights, elect_sign, scaled
from .inputs import Inputs
from .params import STRICT, Fraction
from .registry import method


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


def variance_selection(stack: Tensor, fraction: float) -> Tensor:
    """(*S) 0/1 mask of the `fraction` of entries with the highest variance across the models, counted among the
    entries whose variance is not zero ("Select")."""
    variance = stack.var(dim=0, unbiased=False)
    keep = int(fraction * int(torch.count_nonzero(variance)))
    mask = torch.zeros_like(variance)
    if keep > 0:
        mask.view(-1)[torch.topk(variance.view(-1), keep).indices] = 1.0
    return mask


def coefficients(selected: Tensor, floor: float) -> Tensor:
    """(T,) each model's share of the mean squared selected entries ("Calculate"); uniform where they sum to no
    more than `floor` (all zero, by default)."""
    energy = selected.square().flatten(1).mean(dim=1)
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
def sce(x: Inputs, p: Sce):
    """λ · Σ_t η_t m_t τ_t / Σ_t η_t m_t, η_t ∝ w_t · mean(τ̃_t²) over the top-variance entries τ̃, m_t where τ_t
    has the sign of Σ τ.

    "Erase" keeps, per entry, the task vectors whose sign agrees with the sign of their sum (a zero sum elects +),
    and the agreeing ones are averaged with their coefficients. The models' weights multiply the coefficients."""
    stack = x.stack
    selected = stack if p.select_topk >= 1 else stack * variance_selection(stack, p.select_topk)
    if p.selection == "task_vectors":
        stack = selected
    eta = coefficients(selected, p.coefficient_floor) * x.weights.to(stack.dtype)
    agreeing = (stack.sign() == elect_sign(stack, "mass")).to(stack.dtype)
    agreeing.mul_(broadcast_weights(eta, stack))
    total = agreeing.sum(dim=0)
    merged = (stack * agreeing).sum(dim=0)
    return scaled(merged.div_(torch.where(total == 0, torch.ones_like(total), total)), p.scale)
