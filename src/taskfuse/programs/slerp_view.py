"""Self Positioning's differentiable view: θ(a, λ) = θ₀ + λ · iterated-SLERP(τ₁..τ_T; a), per parameter tensor.

Li et al. 2024 (arXiv:2410.15035) search the space that spherical interpolation of the task vectors spans, with
learned interpolation weights a (a softmax of T logits, so they stay positive and sum to 1) and one scale λ
(exp of a learned log, so it stays positive), trained on a small probe set with a contrastive loss plus μ·λ. The
interpolation of every tensor is computed from its (T, T) Gram matrix (ops.spherical.iterative_slerp_coefficients,
the same function the streaming engine's `self_positioning` method runs), so a step costs T small recursions per
tensor and one weighted sum of its task vectors; the task vectors are held once, as in MergeView.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.spherical import iterative_slerp_coefficients
from .merge_view import MergeView, Parameterization


class SlerpView(MergeView):
    """`view.coefficients` are the T weight logits, `view.log_scale` is log λ; both train, nothing else does."""

    def __init__(self, base: nn.Module, task_vectors: list[dict[str, Tensor]], scale: float = 1.0):
        super().__init__(base, task_vectors, Parameterization("task"), init=0.0)  # logits 0: equal weights
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())
        for i in range(len(self.names)):  # the Gram matrices never change: computed once, in float64
            flat = getattr(self, f"delta_{i}").reshape(self.tasks, -1).double()
            self.register_buffer(f"gram_{i}", flat @ flat.T, persistent=False)

    @property
    def weights(self) -> Tensor:
        return torch.softmax(self.coefficients, 0)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def merged_parameters(self) -> dict[str, Tensor]:
        params = dict(self.base.named_parameters())
        weights, scale = self.weights.double(), self.scale
        merged = {}
        for i, name in enumerate(self.names):
            deltas = getattr(self, f"delta_{i}")
            c = iterative_slerp_coefficients(getattr(self, f"gram_{i}"), weights).to(deltas.dtype)
            merged[name] = params[name].detach() + torch.tensordot(scale * c, deltas, dims=1)
        return merged

    def tensor_weights(self) -> dict[str, list[float]]:
        raise ValueError("Self Positioning's weights are interpolation weights, not per-tensor task-vector weights")

    def learned(self) -> dict:
        """The interpolation weights a and the scale λ: what the `self_positioning` spec replays."""
        return {"*": self.weights.detach().double().tolist(), "scale": float(self.scale.detach())}
