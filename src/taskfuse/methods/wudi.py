"""WUDI-Merging: a merged matrix that interferes least with each task's inputs, the task vectors standing in for them."""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from ..ops.consensus import broadcast_weights, combine, scaled
from ..ops.subspace import all_zero
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Wudi:
    # "adam": the paper's (and FusionBench's) short descent from Σ τ_t; "exact": the objective's minimiser in closed
    # form (our addition, one linear solve per matrix; how the two compare: benchmarks/data_free_additions.py)
    solver: Literal["adam", "exact"] = "adam"
    steps: Annotated[int, Field(ge=0)] = 300  # Adam iterations per matrix (the reference code's iter_num)
    lr: Annotated[float, Field(gt=0.0)] = 1e-5  # Adam learning rate (the reference code's)
    scale: float = 1.0  # on the merged task vector; the paper uses none (1.0)


def interference_terms(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """G = Σ_t τ_tᵀτ_t / ‖τ_t‖² (n, n), summed in float64, and B = Σ_t τ_t G_t (m, n), in the stack's float32 as the
    reference computes everything: no (m, n) float64 copy, which for a 128k-vocabulary embedding table is 4 GB.

    The paper's loss Σ_t ‖(τ − τ_t) τ_tᵀ‖² / ‖τ_t‖² equals tr(τ G τᵀ) − 2 tr(τ Bᵀ) + const, so its gradient is
    2 (τ G − B): one (m, n) × (n, n) product per step whatever T is, where the loss as written costs T products of
    (m, n) × (n, m) (for a 30k-row embedding table, 30k × 30k each). A task vector of zero interferes with nothing and
    is left out (its term is 0/0 as written)."""
    n = stack.shape[-1]
    gram_sum = stack.new_zeros((n, n), dtype=torch.float64)
    pulled = torch.zeros_like(stack[0])
    for task in stack:
        gram = (task.T @ task).double()
        norm2 = gram.trace()  # ‖τ_t‖²
        if norm2 == 0:
            continue
        gram /= norm2
        gram_sum += gram
        pulled += task @ gram.to(task.dtype)
    return gram_sum, pulled


def descend(start: torch.Tensor, gram_sum: torch.Tensor, pulled: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """`steps` Adam steps on the loss from `start` (float32, as the reference runs them); gradients in closed form."""
    merged = torch.nn.Parameter(start.float().clone())
    gram, target = gram_sum.float(), pulled
    optimizer = torch.optim.Adam([merged], lr=lr, weight_decay=0)
    for _ in range(steps):
        merged.grad = 2 * (merged.detach() @ gram - target)
        optimizer.step()
    return merged.detach()


def minimiser(gram_sum: torch.Tensor, pulled: torch.Tensor) -> torch.Tensor:
    """τ G = B solved for τ: τ = B G⁺, the least-squares solution with the smallest norm where G is singular (LoRA
    updates span only their rank's directions, and τ is then 0 outside them). G's products were taken in float32, so
    its directions below float32 round-off of the largest are noise, not directions of the updates, and are cut.

    G is symmetric positive semi-definite, so its pseudo-inverse comes from one eigendecomposition, which every torch
    device has; the SVD-based least-squares driver that cuts small directions (gelsd) runs on the CPU only."""
    rtol = torch.finfo(torch.float32).eps * gram_sum.shape[0]
    return pulled.double() @ torch.linalg.pinv(gram_sum, rtol=rtol, hermitian=True)


@method(
    "wudi",
    params=Wudi,
    space="delta",
    paper="Cheng et al. 2025, Whoever Started the Interference Should End It: Guiding Data-Free Model Merging via "
    "Task Vectors, ICML, arXiv:2503.08099",
    reference="fusion_bench.method.wudi.wudi.wudi_merging (FusionBench 0.2.33); github.com/nathanielyvo/WUDI-Merging",
    traits=("symmetric", "matrix"),
)
def wudi(x: Inputs, p: Wudi):
    """argmin_τ Σ_t ‖(τ − τ_t) τ_tᵀ‖² / ‖τ_t‖² on 2-D tensors, by Adam from Σ_t τ_t (or exactly); the mean elsewhere.

    Other tensors take the mean of task vectors, as the reference code does. Weights scale each τ_t first."""
    if x.stack.dim() != 3 or all_zero(x.stack):
        return scaled(combine(x.stack, x.weights, "count"), p.scale)
    weighted = x.stack * broadcast_weights(x.weights, x.stack)
    gram_sum, pulled = interference_terms(weighted)
    if p.solver == "exact":
        merged = minimiser(gram_sum, pulled)
    else:
        merged = descend(weighted.sum(0), gram_sum, pulled, p.steps, p.lr)
    return scaled(merged.to(x.stack.dtype), p.scale)
