"""Methods written as "statistics over slices, then a merge per slice".

Such a method is a `prepare(x: SliceInputs, p) -> merge_chunk` function: it may make passes over `x.slices` to
gather whole-tensor statistics (top-k cut-offs, norms, an angle) and returns `merge_chunk(chunk, sl)`, which merges
one (T, C) slice into its (C,) result. The executor runs prepare on slices built from the stored tensors, so it
never holds a float32 copy of the stack and can spread the slices over threads; `@sliced` derives the plain
whole-stack method `fn(Inputs, p)` from the same function, so the math lives in one place.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from ..ops.chunks import map_chunks
from ..ops.slices import Slices
from .inputs import Inputs, RandomField

ChunkMerge = Callable[[Tensor, slice], Tensor]


@dataclass(frozen=True)
class SliceInputs:
    """What a sliced method sees: like Inputs, with the stack available only slice by slice."""

    slices: Slices
    weights: Tensor
    shape: tuple[int, ...]  # S, the tensor's shape
    key: str = ""
    seed: int = 0

    @classmethod
    def of(cls, x: Inputs) -> "SliceInputs":
        """The slices of an in-memory Inputs."""
        return cls(Slices.of_stack(x.stack.reshape(x.count, -1)), x.weights, tuple(x.stack.shape[1:]), x.key, x.seed)

    @property
    def count(self) -> int:
        return self.slices.count

    @property
    def random(self) -> RandomField:
        return RandomField(self.seed, self.key)


Prepare = Callable[[SliceInputs, Any], ChunkMerge]


def merge_whole(prepare: Prepare, x: Inputs, p: Any) -> Tensor:
    """Run a sliced method over an in-memory stack: the (*S) result."""
    merge_chunk = prepare(SliceInputs.of(x), p)
    # a copy per slice: merges may work in place on their slice, and a method must not mutate its inputs
    flat = map_chunks(lambda chunk, sl: merge_chunk(chunk.clone(), sl), x.stack.reshape(x.count, -1))
    return flat.reshape(x.stack.shape[1:])


def sliced(prepare: Prepare) -> Callable[[Inputs, Any], Tensor]:
    """Decorator: the whole-stack method of a sliced `prepare`, which stays reachable as `.prepare`."""

    @functools.wraps(prepare)
    def whole(x: Inputs, p: Any) -> Tensor:
        return merge_whole(prepare, x, p)

    whole.prepare = prepare  # type: ignore[attr-defined]
    return whole
