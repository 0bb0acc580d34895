"""The least-squares merge of linear layers behind RegMean."""
from __future__ import annotations

import torch
from torch import Tensor


def regression_mean(weights_stack: Tensor, grams: Tensor, model_weights: Tensor, off_diagonal_scale: float) -> Tensor:
    """argmin_W Σ_t w_t ‖X_t Wᵀ − X_t W_tᵀ‖² with each Gram X_tᵀX_t's off-diagonals scaled by α (Jin et al. 2023,
    Eq. 2 and §3.2): W* = (Σ_t w_t W_t G̃_t)(Σ_t w_t G̃_t)⁻¹.

    weights_stack (T, out, in), grams (T, in, in), model_weights (T,). Solved in float64 (the summed Gram of
    long-tailed activations spans many orders of magnitude). An input feature that no model's data ever activates
    (a zero row and column in every Gram) leaves the regression silent about its column: that column is the
    weighted average instead, so the result is defined. With α = 1 the sum may be singular; then the minimum-norm
    least-squares solution is taken.
    """
    g = grams.double()
    diagonal = torch.diagonal(g, dim1=-2, dim2=-1)  # (T, in)
    reduced = g * off_diagonal_scale + torch.diag_embed(diagonal) * (1.0 - off_diagonal_scale)
    reduced = reduced * model_weights.double().view(-1, 1, 1)
    lhs = reduced.sum(0)  # (in, in)
    rhs = torch.einsum("tij,toj->io", reduced, weights_stack.double())  # Σ_t w_t G̃_t W_tᵀ: (in, out)
    silent = lhs.diagonal() == 0
    if silent.any():
        total = model_weights.double().sum()
        average = torch.einsum("t,toi->io", model_weights.double(), weights_stack.double()) / total  # (in, out)
        lhs[silent, silent] = 1.0
        rhs[silent] = average[silent]
    solution, info = torch.linalg.solve_ex(lhs, rhs)
    if info.item() != 0 or not torch.isfinite(solution).all():
        solution = torch.linalg.lstsq(lhs, rhs, driver="gelsd").solution
    return solution.T.to(weights_stack.dtype).contiguous()  # (out, in)
