"""One static mixture of a library: W = W₀ + Σ_e w_e·B_e·A_e in every adapted module (LoraHub's merged adapter,
task arithmetic over LoRA updates), applied in place to a loaded model."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .library import LoraLibrary
from .modules import module_names


class WeightedMixture:
    """Sets `model`'s adapted weights to the base plus a weighted sum of the updates, as often as asked: each call
    starts again from the base weights kept here, so no error accumulates across calls."""

    def __init__(self, model: nn.Module, library: LoraLibrary):
        self.model, self.library = model, library
        self.names = module_names(model, library)
        self.base = {m: model.get_submodule(own).weight.detach().clone() for m, own in self.names.items()}

    @torch.no_grad()
    def set(self, weights: Sequence[float]) -> nn.Module:
        if len(weights) != len(self.library.experts):
            raise ValueError(f"{len(weights)} weights for {len(self.library.experts)} experts")
        for module, own in self.names.items():
            weight = self.model.get_submodule(own).weight
            weight.copy_(self.base[module])
            for w, update in zip(weights, self.library.updates(module)):
                if update is not None and w != 0:
                    weight.add_((update.b @ update.a) * w)
        return self.model
