"""TSV-Merge: per-task low-rank singular subspaces, decorrelated and summed."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import broadcast_weights, combine, scaled
from ..ops.subspace import all_zero, nearest_orthonormal, numerical_rank, svd
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Tsv:
    scale: float = 1.0  # α on the merged task vector


def tsv_matrix(stack: torch.Tensor) -> torch.Tensor:
    """Keep each task's top r/T singular triplets (those above round-off), orthogonalise the stacked U and V (polar
    factor), recombine.

    stack: (T, m, n) weighted task matrices. Follows Sec. 4 of the paper (TSV-M).
    """
    n_tasks, rank = stack.shape[0], min(stack.shape[1:])
    k = rank // n_tasks
    parts = [svd(t) for t in stack]
    # each task's k, or fewer where its matrix has fewer directions above round-off (a LoRA update of rank 8)
    ks = [min(k, numerical_rank(ps, stack.shape[1:])) for _, ps, _ in parts]
    if sum(ks) == 0:
        return torch.zeros_like(stack[0], dtype=torch.float64)
    u = torch.cat([pu[:, :kt] for (pu, _, _), kt in zip(parts, ks)], dim=1)  # (m, Σ k_t)
    s = torch.cat([ps[:kt] for (_, ps, _), kt in zip(parts, ks)])  # (Σ k_t,)
    vh = torch.cat([pv[:kt] for (_, _, pv), kt in zip(parts, ks)], dim=0)  # (Σ k_t, n)
    return (nearest_orthonormal(u) * s) @ nearest_orthonormal(vh)


@method(
    "tsv",
    params=Tsv,
    space="delta",
    paper="Gargiulo et al. 2025, Task Singular Vectors: Reducing Task Interference in Model Merging, CVPR, "
    "arXiv:2412.00081",
    reference="github.com/AntoAndGar/task_singular_vectors (compute_and_sum_svd_mem_reduction)",
    traits=("matrix",),
)
def tsv(x: Inputs, p: Tsv):
    """TSV-M on 2-D tensors with rank ≥ T; other tensors take the weighted mean of task vectors, as the paper's code."""
    if x.stack.dim() != 3 or min(x.stack.shape[1:]) < x.count or all_zero(x.stack):
        return scaled(combine(x.stack, x.weights, "weights"), p.scale)
    weighted = x.stack * broadcast_weights(x.weights, x.stack)
    return scaled(tsv_matrix(weighted).to(x.stack.dtype), p.scale)
