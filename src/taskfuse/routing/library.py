"""A library of LoRA adapters on one base, as the factors of each adapted linear module: ΔW_e = B_e·A_e."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AdapterError
from ..io.adapter import AdapterCheckpoint
from ..io.checkpoint import Checkpoint


@dataclass(frozen=True)
class ExpertUpdate:
    """One adapter's update of one module, applied as Δy = x·Aᵀ·Bᵀ (LoRA's scaling folded into B)."""

    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens @ self.a.T) @ self.b.T  # (t, in) → (t, out)


class LoraLibrary:
    """expert name → adapter, read through io.adapter (so rsLoRA, rank patterns and scalings are PEFT's)."""

    def __init__(self, base: str, experts: list[str], modules: dict[str, dict[str, ExpertUpdate]]):
        self.base, self.experts, self.modules = base, experts, modules

    @classmethod
    def from_adapters(cls, base: str | Path, adapters: dict[str, str | Path]) -> "LoraLibrary":
        modules: dict[str, dict[str, ExpertUpdate]] = {}
        for name, path in adapters.items():
            ckpt = Checkpoint.open(f"{base}+{path}")
            assert isinstance(ckpt, AdapterCheckpoint)
            refused = [f"{t} ({u.kind})" for t, u in ckpt.updates.items() if u.kind == "embedding" or u.magnitude]
            refused += [f"{t} (stored whole, modules_to_save)" for t in ckpt.replaced]
            if refused:
                raise AdapterError(f"adapter {name!r} ({path}): routing mixes low-rank updates of linear layers, "
                                   f"but it also changes {', '.join(refused[:4])}. Fix: train the adapter on linear "
                                   "layers only (no embeddings, DoRA or modules_to_save), or merge it statically.")
            for target, update in ckpt.updates.items():
                a = ckpt.factors.read(update.lora_a).float()
                b = ckpt.factors.read(update.lora_b).float() * update.scaling
                modules.setdefault(target.removesuffix(".weight"), {})[name] = ExpertUpdate(a, b)
        return cls(str(base), list(adapters), modules)

    def without(self, expert: str) -> "LoraLibrary":
        """The library less one expert (leave-one-out: the held-out task's adapter is not available)."""
        kept = [e for e in self.experts if e != expert]
        modules = {m: {e: u for e, u in per.items() if e != expert} for m, per in self.modules.items()}
        return LoraLibrary(self.base, kept, {m: per for m, per in modules.items() if per})

    def updates(self, module: str) -> list[ExpertUpdate | None]:
        """The module's update per expert, in library order; None where an adapter leaves the module alone."""
        per = self.modules[module]
        return [per.get(e) for e in self.experts]

    def parameters_count(self) -> int:
        return sum(u.a.numel() + u.b.numel() for per in self.modules.values() for u in per.values())
