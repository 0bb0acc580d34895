"""TSV-Merge: per-task low-rank singular subspaces, decorrelated and summed."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import broadcast_weights, combine, scaled
from ..ops.subspace import all_zero, nearest_orthonormal, svd
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Tsv:
    scale: float = 1.0  # α on the merged task vector


def tsv_matrix(stack: torch.Tensor) -> torch.Tensor:
    """Keep each task's top r/T singular triplets, orthogonalise the stacked U and V (polar factor), recombine.

    stack: (T, m, n) weighted task matrices. Follows Sec. 4 of the paper (TSV-M).
    """
    n_tasks, rank = stack.shape[0], min(stack.shape[1:])
    k = rank // n_tasks
    parts = [svd(t) for t in stack]
    u = torch.cat([pu[:, :k] for pu, _, _ in parts], dim=1)  # (m, T·k)
    s = torch.cat([ps[:k] for _, ps, _ in parts])  # (T·k,)
    vh = torch.cat([pv[:k] for _, _, pv in parts], dim=0)  # (T·k, n)
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
