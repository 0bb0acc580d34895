"""KnOTS: align the task updates of a matrix in one shared basis (an SVD of their concatenation), then merge their
coordinates in it with TIES or DARE-TIES."""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import scaled
from ..ops.subspace import all_zero, numerical_rank
from .dare import DareTies, dare_ties
from .inputs import Inputs
from .params import STRICT, PerModelDensity
from .registry import method
from .ties import Ties, ties


@dataclass(config=STRICT)
class Knots:
    inner: Literal["ties", "dare_ties"] = "ties"  # the merge applied to the aligned coordinates (the paper's two)
    density: PerModelDensity = 0.2  # the inner merge's: TIES keeps the top fraction, DARE keeps at random
    scale: float = 1.0  # λ on the merged update


def descending(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The singular values (descending) and vectors of a matrix X from its Gram matrix (XXᵀ or XᵀX, float64)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    return eigenvalues.flip(0).clamp_min(0).sqrt(), eigenvectors.flip(1)


def aligned(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """U (m, k) and the coordinates S·V_tᵀ = Uᵀ·ΔW_t (T, k, n) of each task's (m, n) update in the left singular
    basis of X = [ΔW_1 … ΔW_T] (m, T·n), so that ΔW_t = U · coordinates[t] (the paper's Eq. 3-4). Directions at
    float32 round-off are dropped (the reference drops singular values ≤ 1e-5): k is the updates' joint rank, at
    most T·r for rank-r LoRA updates.

    U and S come from the eigendecomposition of XXᵀ = Σ_t ΔW_t·ΔW_tᵀ (m, m), summed in float64 one update at a
    time, not from an SVD of X: no float64 copy of X, and faster (benchmarks/knots_alignment.py times both routes in
    one merge). The Gram matrix squares the singular values, so its float64 round-off (about
    1e-16 of the largest) sits far below the float32 round-off (about 1e-7 · max(m, T·n) of the largest singular
    value, squared) under which `numerical_rank` drops a direction anyway. For m > T·n: `aligned_by_gram`."""
    n_tasks, m, n = stack.shape
    gram = stack.new_zeros((m, m), dtype=torch.float64)
    for update in stack:
        update = update.double()
        gram += update @ update.T
    s, u = descending(gram)
    basis = u[:, :numerical_rank(s, (m, n_tasks * n))]
    return basis, torch.stack([basis.T @ update.double() for update in stack])


Back = Callable[[torch.Tensor], torch.Tensor]  # merged coordinates (k, n) to the merged update (m, n)


def aligned_by_gram(stack: torch.Tensor, rows: int = 4096) -> tuple[torch.Tensor, Back]:
    """`aligned` for a tall X = [ΔW_1 … ΔW_T] (m > T·n: a vocabulary table, 128k × 4096 in a Llama 3), whose XXᵀ
    (m, m) and U (m, k) would be larger than X itself (17 GB in float64 for four such tables). V and S come from the
    other Gram matrix, XᵀX (T·n, T·n), summed over `rows`-row blocks; U = X·V·S⁻¹ is never formed: the returned
    function takes merged coordinates (k, n) back to (m, n) as X · (V·S⁻¹·merged), block by block."""
    n_tasks, m, n = stack.shape

    def block(start: int) -> torch.Tensor:  # rows start… of [ΔW_1 … ΔW_T], (rows, T·n), in float64
        return stack[:, start:start + rows].double().permute(1, 0, 2).reshape(-1, n_tasks * n)

    gram = stack.new_zeros((n_tasks * n, n_tasks * n), dtype=torch.float64)
    for start in range(0, m, rows):
        joined = block(start)
        gram += joined.T @ joined
    s, v = descending(gram)
    k = numerical_rank(s, (m, n_tasks * n))
    coordinates = (s[:k, None] * v[:, :k].T).reshape(k, n_tasks, n).transpose(0, 1)
    lift = v[:, :k] / s[:k]  # (T·n, k): U = X · lift

    def back(merged: torch.Tensor) -> torch.Tensor:
        weights = lift @ merged.double()  # (T·n, n)
        out = stack.new_empty((m, n))
        for start in range(0, m, rows):
            out[start:start + rows] = (block(start) @ weights).to(stack.dtype)
        return out
    return coordinates, back


@method(
    "knots",
    params=Knots,
    space="delta",
    paper="Stoica et al. 2025, Model merging with SVD to tie the KnOTS, ICLR, arXiv:2410.19735",
    reference="github.com/gstoica27/KnOTS (task_merger.py, svd-vector representation); "
    "fusion_bench.method.knots.knots_utils.subspace_alignment",
    traits=("symmetric", "matrix"),
)
def knots(x: Inputs, p: Knots):
    """λ · U · merge_t(S·V_tᵀ) on 2-D tensors, U S [V_1ᵀ … V_Tᵀ] the SVD of the updates side by side; other tensors
    take the inner merge of the task vectors themselves.

    TIES trims within each tensor's coordinates (the reference trims over the whole model's at once); weights enter
    the inner merge as they enter TIES."""
    inner, params = (ties, Ties(density=p.density)) if p.inner == "ties" else (dare_ties, DareTies(density=p.density))
    if x.stack.dim() != 3 or all_zero(x.stack):
        return scaled(inner(x, params), p.scale)
    n_tasks, m, n = x.stack.shape
    if m > n_tasks * n:  # the smaller Gram matrix of the two
        coordinates, back = aligned_by_gram(x.stack)
    else:
        basis, coordinates = aligned(x.stack)
        back = lambda merged: basis @ merged.double()  # noqa: E731
    if coordinates.shape[1] == 0:
        return torch.zeros_like(x.stack[0])
    merged = inner(Inputs(coordinates.float(), x.weights, key=x.key, seed=x.seed), params)
    return scaled(back(merged).to(x.stack.dtype), p.scale)
