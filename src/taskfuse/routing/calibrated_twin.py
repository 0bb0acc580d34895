"""Twin-Merging for tasks that share their inputs (decided here, not in the paper).

Twin-Merging's router (routing/twin.py) weighs each task's exclusive part by a softmax over the input's pooled
features. Where several tasks read the same kind of input (glosses for three WordNet tasks, fortunes for two), no
router can tell them apart, and one trained to fit its data is confidently wrong on a third of them: every wrong
pick adds another task's exclusive part to the shared merge, and the routed model falls below the shared merge
alone. Two changes, each fitted on held-out inputs:

- temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the router's logits divided by
  the T that minimises its cross-entropy on inputs it did not learn from, so an input that could be any of three
  tasks spreads its weight over the three;
- a scale λ ∈ [0, 1] on the exclusive parts, chosen on validation: λ = 0 is the shared merge alone, so an
  uninformative router costs nothing once validation has seen it.
"""
from __future__ import annotations

import torch
from torch import nn

from .library import LoraLibrary
from .twin import TwinMerged

TEMPERATURES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
EXCLUSIVE_SCALES = (0.0, 0.25, 0.5, 1.0)


@torch.no_grad()
def fit_temperature(router: nn.Module, features: torch.Tensor, tasks: torch.Tensor,
                    grid: tuple[float, ...] = TEMPERATURES) -> tuple[float, dict[float, float]]:
    """The T of `grid` whose tempered router has the least cross-entropy on held-out `features` (labelled by
    task), and each T's cross-entropy."""
    logits = router(features)
    losses = {t: float(nn.functional.cross_entropy(logits / t, tasks)) for t in grid}
    return min(losses, key=losses.get), losses


def tempered(router: nn.Sequential, temperature: float) -> nn.Sequential:
    """`router` with its logits divided by `temperature`, as a last linear layer (so TwinMerged reads its shape)."""
    experts = router[-1].out_features
    divide = nn.Linear(experts, experts, bias=False)
    divide.weight.data = torch.eye(experts) / temperature
    return nn.Sequential(*router, divide).eval().requires_grad_(False)


class ScaledTwin(TwinMerged):
    """Twin-Merging with every exclusive part's routed weight multiplied by `scale`."""

    def __init__(self, shared_encoder: nn.Module, library: LoraLibrary, router: nn.Sequential, scale: float = 1.0):
        super().__init__(shared_encoder, library, router)
        self.scale = scale

    def set_coefficients(self, coefficients: torch.Tensor | None) -> None:
        super().set_coefficients(None if coefficients is None else coefficients * self.scale)
