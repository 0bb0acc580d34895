"""A base model whose adapted modules add a routed mixture of the library's updates to their output."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .library import ExpertUpdate, LoraLibrary


class RoutedUpdate(nn.Module):
    """y = base(x) + Σ_e c_e(x) · B_e A_e x, with c(x) from the router, per token."""

    def __init__(self, base: nn.Module, updates: list[ExpertUpdate | None], router: nn.Module):
        super().__init__()
        self.base, self.router = base, router
        self.experts = [i for i, u in enumerate(updates) if u is not None]
        present = [updates[i] for i in self.experts]
        # equal ranks (the usual library): every expert in two batched products instead of a loop per expert
        self.stacked = len({(u.a.shape, u.b.shape) for u in present}) == 1
        if self.stacked:  # all experts' factors side by side: (E·r, in) and (E·r, out)
            self.register_buffer("cat_a", torch.cat([u.a for u in present]))
            self.register_buffer("cat_b", torch.cat([u.b.T for u in present]))
            self.rank = present[0].a.shape[0]
        else:
            self.lora_a = nn.ParameterList([nn.Parameter(u.a, requires_grad=False) for u in present])
            self.lora_b = nn.ParameterList([nn.Parameter(u.b, requires_grad=False) for u in present])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        dtype = self.cat_a.dtype if self.stacked else self.lora_a[0].dtype
        tokens = x.reshape(-1, x.shape[-1]).to(dtype)  # (t, in)
        coefficients = self.router(tokens)[:, self.experts]  # (t, E present here)
        if self.stacked:
            low = tokens @ self.cat_a.T  # (t, E·r): every expert's A at once
            weighted = low * coefficients.repeat_interleave(self.rank, dim=1)
            delta = weighted @ self.cat_b  # (t, out)
        else:
            delta = sum(coefficients[:, slot:slot + 1] * ((tokens @ a.T) @ b.T)
                        for slot, (a, b) in enumerate(zip(self.lora_a, self.lora_b)))
        return y + delta.reshape(y.shape).to(y.dtype)


def module_names(model: nn.Module, library: LoraLibrary) -> dict[str, str]:
    """Library module name → the model's own (one may carry a prefix the other lacks, e.g. `bert.`)."""
    names = {n for n, _ in model.named_modules()}
    found, missing = {}, []
    for module in library.modules:
        matches = [n for n in names if n == module or n.endswith("." + module) or module.endswith("." + n)]
        exact = [n for n in matches if n == module]
        if exact or len(matches) == 1:
            found[module] = (exact or matches)[0]
        else:
            missing.append(module)
    if missing:
        from ..errors import AdapterError
        raise AdapterError(f"the model has no module (or several) for the adapted layer(s) {missing[:4]}. Fix: "
                           "route the base model the adapters were trained on.")
    return found


def replace_adapted(model: nn.Module, library: LoraLibrary,
                    build: Callable[[str, list[ExpertUpdate | None], nn.Module], nn.Module]) -> nn.Module:
    """Replace, in place, each adapted module of `model` by `build(library module name, its updates, the module)`;
    returns the model."""
    for module, own in module_names(model, library).items():
        parent_name, _, child = own.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, build(module, library.updates(module), getattr(parent, child)))
    return model


def route(model: nn.Module, library: LoraLibrary,
          make_router: Callable[[str, list[ExpertUpdate | None], nn.Module], nn.Module]) -> nn.Module:
    """Replace, in place, each adapted module of `model` by a RoutedUpdate with the router `make_router(name,
    updates, module)` builds for it; returns the model."""
    return replace_adapted(model, library, lambda name, updates, base: RoutedUpdate(
        base, updates, make_router(name, updates, base)))
