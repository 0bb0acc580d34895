"""The frozen bundle of tensors every merge method receives."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..ops.bernoulli import keep_mask_block

# Draws at flat position i of a tensor come from generator block i // RANDOM_BLOCK, so any slice of a tensor can
# be drawn on its own (in any order, on any thread) and get the same values as drawing the whole tensor.
RANDOM_BLOCK = 1 << 18


def stable_seed(seed: int, key: str) -> int:
    """63-bit seed from (seed, tensor name) with blake2b: stable across processes, unlike Python's hash()."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class RandomField:
    """Random draws addressed by (stream, flat position) for one tensor, seeded from (seed, key)."""

    seed: int
    key: str

    def keep_mask(self, stream: int, sl: slice, keep: float, device: torch.device | str = "cpu") -> Tensor:
        """(sl.stop - sl.start,) int8 mask at flat positions sl of stream `stream`: -1 (all bits set) with
        probability `keep`, else 0; apply with bernoulli.drop_ (a bitwise and on float32 bits)."""
        first, last = sl.start // RANDOM_BLOCK, (sl.stop - 1) // RANDOM_BLOCK
        masks = [keep_mask_block(stable_seed(self.seed, f"{self.key}#{stream}@{block}"), RANDOM_BLOCK, keep)
                 for block in range(first, last + 1)]  # whole blocks, so a position's draw never depends on sl
        drawn = masks[0] if len(masks) == 1 else torch.cat(masks)
        offset = first * RANDOM_BLOCK
        return drawn[sl.start - offset:sl.stop - offset].to(device)


@dataclass(frozen=True)
class Inputs:
    """What a method sees for one output tensor.

    stack: (T, *S) task vectors (delta-space methods) or raw weights (weight-space methods), float32.
    weights: (T,) per-model weights. base: (*S) base weights or None. key: the tensor's name.
    seed: the merge seed; randomness comes only from generator() and random, seeded from (seed, key), so results
    do not depend on thread count or the order tensors are processed in.
    statistics: (T, *G) per-model statistics of this tensor for methods that merge with data (RegMean's Gram
    matrices, Fisher's diagonal), float32; None where the models carry none for it.
    """

    stack: Tensor
    weights: Tensor
    base: Tensor | None = None
    key: str = ""
    seed: int = 0
    statistics: Tensor | None = None

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
        # Always a CPU generator: CUDA's generators produce other streams, and results must not depend on the device.
        g = torch.Generator()
        g.manual_seed(stable_seed(self.seed, self.key if stream == 0 else f"{self.key}#{stream}"))
        return g

    @property
    def random(self) -> RandomField:
        """Position-addressed draws (see RandomField), for methods that work slice by slice."""
        return RandomField(self.seed, self.key)
