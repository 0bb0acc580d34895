"""The frozen bundle of tensors every merge method receives."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


def stable_seed(seed: int, key: str) -> int:
    """63-bit seed from (seed, tensor name) with blake2b: stable across processes, unlike Python's hash()."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class Inputs:
    """What a method sees for one output tensor.

    stack: (T, *S) task vectors (delta-space methods) or raw weights (weight-space methods), float32.
    weights: (T,) per-model weights. base: (*S) base weights or None. key: the tensor's name.
    seed: the merge seed; randomness comes only from generator(), seeded from (seed, key), so results do not
    depend on thread count or the order tensors are processed in.
    """

    stack: Tensor
    weights: Tensor
    base: Tensor | None = None
    key: str = ""
    seed: int = 0

    @classmethod
    def of(
        cls,
        stack: Tensor | Sequence[Tensor],
        weights: Tensor | Sequence[float] | None = None,
        base: Tensor | None = None,
        key: str = "",
        seed: int = 0,
    ) -> "Inputs":
        """Convenience constructor: stacks a list of tensors and defaults weights to ones."""
        s = stack if isinstance(stack, Tensor) else torch.stack(list(stack))
        s = s.float()
        w = torch.ones(s.shape[0]) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (s.shape[0],):
            raise ValueError(f"weights must have shape ({s.shape[0]},), got {tuple(w.shape)}")
        return cls(s, w.to(s.device), None if base is None else base.float(), key, seed)

    @property
    def count(self) -> int:
        """T, the number of models."""
        return self.stack.shape[0]

    def generator(self, stream: int = 0) -> torch.Generator:
        """A fresh generator seeded from (seed, key, stream): the only source of randomness a method may use.

        Methods draw one stream per model, so a model's draws do not depend on how the tensor is sliced.
        Stream 0 is seeded from (seed, key) alone.
        """
        g = torch.Generator(device=self.stack.device)
        g.manual_seed(stable_seed(self.seed, self.key if stream == 0 else f"{self.key}#{stream}"))
        return g
