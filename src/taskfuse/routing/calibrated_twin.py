"""Twin-Merging for tasks that share their inputs (decided here, not in the paper).

Twin-Merging's router (routing/twin.py) weighs each task's exclusive part by a softmax over the input's pooled
features. Where several tasks read the same kind of input (glosses for three WordNet tasks, fortunes for two), no
router can tell them apart, and one trained to fit its data is confidently wrong on a third of them: every wrong
pick adds another task's exclusive part to the shared merge, and the routed model falls below the shared merge
alone. Two changes, each fitted on held-out inputs:

- temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the router's logits divided by
  the T that minimises its cross-entropy on inputs it did not learn from, so an input that could be any of three
  tasks spreads its weight over the three;
- a scale λ_t ∈ [0, 1] on each task's exclusive part, chosen on validation: λ_t = 0 leaves task t's part out, so a
  part the router cannot place costs nothing once validation has seen it, while a part it routes well (a task
  whose inputs no other task shares) still adds to the shared merge. One λ for every part was the first version:
  validation chose 0, since the parts routed wrongly outweighed the rest.

The scales are found by coordinate ascent (`search_part_scales`) from every part at 0, the shared merge alone: each
part in turn takes the value that scores best with the others held. A part at 0 is not held at all
(`scaled_parts`), so the search's early trials, and a final model that keeps few parts, cost little more than the
shared merge.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

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
    """Twin-Merging with each exclusive part's routed weight multiplied by `scale` (one value for every part, or
    one per router output). `parts`: the router outputs whose parts `library` holds, in its order (None: all)."""

    def __init__(self, shared_encoder: nn.Module, library: LoraLibrary, router: nn.Sequential,
                 scale: float | Sequence[float] = 1.0, parts: list[int] | None = None):
        super().__init__(shared_encoder, library, router)
        self.scale, self.parts = scale, parts

    def stored_params(self) -> dict:
        """What rebuilds this model in the routed-model format (routing/store.py, router "twin_calibrated"): the
        router's shape, the scales and the parts held. The temperature is the router's last layer, stored with it."""
        scale = [float(s) for s in self.scale] if isinstance(self.scale, (list, tuple)) else float(self.scale)
        return {**self.router_params, "scale": scale, "parts": self.parts}

    def set_coefficients(self, coefficients: torch.Tensor | None) -> None:
        if coefficients is not None:
            coefficients = coefficients * torch.as_tensor(self.scale, dtype=coefficients.dtype)
            if self.parts is not None:
                coefficients = coefficients[:, self.parts]
        super().set_coefficients(coefficients)


def scaled_parts(shared_encoder: nn.Module, library: LoraLibrary, router: nn.Sequential,
                 scales: Sequence[float]) -> nn.Module:
    """Twin-Merging over the parts whose scale is not 0, on a copy of `shared_encoder` (routing wraps its layers in
    place); the copy alone when every scale is 0. A part at 0 adds exactly nothing, so leaving it out changes no
    output beyond rounding and saves its time and parameters."""
    if len(scales) != len(library.experts):
        raise ValueError(f"{len(scales)} scales for a library of {len(library.experts)} exclusive parts")
    kept = [i for i, s in enumerate(scales) if s]
    shared = copy.deepcopy(shared_encoder).eval()
    if not kept:
        return shared
    return ScaledTwin(shared, kept_parts(library, scales), router, scale=list(scales), parts=kept).eval()


def kept_parts(library: LoraLibrary, scales: Sequence[float]) -> LoraLibrary:
    """The exclusive parts whose scale is not 0: the library `scaled_parts` routes over (and the one to save with
    its model)."""
    for expert, scale in zip(list(library.experts), scales):
        if not scale:
            library = library.without(expert)
    return library


def search_part_scales(score: Callable[[tuple[float, ...]], float], order: Sequence[int], parts: int,
                       values: Sequence[float] = EXCLUSIVE_SCALES[1:]) -> tuple[tuple[float, ...], list[dict]]:
    """Coordinate ascent over one scale per part, from every part at 0: each part of `order` in turn takes the
    value of `values` that scores best with the others held, and keeps its current one unless another scores
    strictly higher. Returns the scales and every trial ({"scales", "score"}, the start first)."""
    scales = (0.0,) * parts
    best = score(scales)
    trials = [{"scales": list(scales), "score": best}]
    for part in order:
        current = scales
        for value in values:
            trial = current[:part] + (float(value),) + current[part + 1:]
            result = score(trial)
            trials.append({"scales": list(trial), "score": result})
            if result > best:
                best, scales = result, trial
    return scales, trials
