"""Isotropic merging: flatten the singular spectrum of the merged task matrix (Iso-C), plus task subspaces (Iso-CTS)."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import broadcast_weights, combine, scaled
from ..ops.subspace import all_zero, nearest_orthonormal, numerical_rank, svd
from .inputs import Inputs
from .params import STRICT, Fraction
from .registry import method

PAPER = ("Marczak et al. 2025, No Task Left Behind: Isotropic Model Merging with Common and Task-Specific "
         "Subspaces, ICML, arXiv:2502.04959")
REFERENCE = "github.com/danielm1405/iso-merging; fusion_bench isotropic_merging"


@dataclass(config=STRICT)
class IsoC:
    scale: float = 1.0  # α


@dataclass(config=STRICT)
class IsoCts:
    common_fraction: Fraction = 0.8  # share of the rank given to the common (task-arithmetic) subspace
    scale: float = 1.0  # α


def _mean_fallback(x: Inputs, scale: float) -> torch.Tensor:
    """Non-matrix tensors (biases, norms) take the weighted mean of task vectors, as the reference code does."""
    return scale * combine(x.stack, x.weights, "weights")


@method("iso_c", params=IsoC, space="delta", paper=PAPER, reference=REFERENCE, traits=("matrix",))
def iso_c(x: Inputs, p: IsoC):
    """SVD of Σ_t w_t τ_t with every singular value replaced by their mean: σ̄ U Vᵀ (Eq. 6).

    Only directions above float32 round-off count: all of them for full fine-tunes, the span for LoRA updates."""
    if x.stack.dim() != 3 or all_zero(x.stack):
        return _mean_fallback(x, p.scale)
    summed = combine(x.stack, x.weights, "none")
    u, s, vh = svd(summed)
    r = numerical_rank(s, summed.shape)  # full fine-tunes: min(m, n); LoRA experts: far less
    if r == 0:
        return torch.zeros_like(x.stack[0])
    return scaled((s[:r].mean() * (u[:, :r] @ vh[:r])).to(x.stack.dtype), p.scale)


def iso_cts_matrix(stack: torch.Tensor, common_fraction: float) -> torch.Tensor:
    """Top singular directions of Σ τ_t as the common subspace; the rest of the rank is split equally among tasks'
    top directions orthogonal to it; orthogonalise and give all directions the mean singular value (Sec. 4.2)."""
    n_tasks, rank = stack.shape[0], min(stack.shape[1:])
    per_task = (rank - int(rank * common_fraction)) // n_tasks
    common = rank - per_task * n_tasks
    u, s, vh = svd(stack.sum(0))
    common = min(common, numerical_rank(s, stack.shape[1:]))  # directions above round-off only (see iso_c)
    us, ss, vhs = [u[:, :common]], [s[:common]], [vh[:common]]
    u_common = u[:, :common]
    for t in stack.double():
        # (I − U Uᵀ) τ without forming the (m, m) projector: m is 30k rows for an embedding table
        tu, ts, tvh = svd(t - u_common @ (u_common.T @ t), largest=s[0])
        k = min(per_task, numerical_rank(ts, t.shape, largest=s[0]))  # relative to the merge, not the residual
        us.append(tu[:, :k]), ss.append(ts[:k]), vhs.append(tvh[:k])
    if sum(len(part) for part in ss) == 0:
        return torch.zeros_like(stack[0], dtype=torch.float64)
    u_all = nearest_orthonormal(torch.cat(us, dim=1))
    vh_all = nearest_orthonormal(torch.cat(vhs, dim=0))
    return torch.cat(ss).mean() * (u_all @ vh_all)


@method("iso_cts", params=IsoCts, space="delta", paper=PAPER, reference=REFERENCE, traits=("matrix",))
def iso_cts(x: Inputs, p: IsoCts):
    """Iso-CTS on 2-D tensors with rank ≥ T; weighted mean elsewhere."""
    if x.stack.dim() != 3 or min(x.stack.shape[1:]) < x.count or all_zero(x.stack):
        return _mean_fallback(x, p.scale)
    weighted = x.stack * broadcast_weights(x.weights, x.stack)
    return scaled(iso_cts_matrix(weighted, p.common_fraction).to(x.stack.dtype), p.scale)
