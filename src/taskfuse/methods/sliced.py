"""Methods written as "statistics over slices, then a merge per slice".

Such a method is a `prepare(x: SliceInputs, p) -> merge_chunk` function: it may make passes over `x.slices` to
gather whole-tensor statistics (top-k cut-offs, norms, an angle) and returns `merge_chunk(chunk, sl)`, which merges
one (T, C) slice into its (C,) result. The executor runs prepare on slices built from the stored tensors, so it
never holds a float32 copy of the stack and can spread the slices over threads; `@sliced` derives the plain
whole-stack method `fn(Inputs, p)` from the same function, so the math lives in one place.

A method whose result is usually known before its statistics are (SLERP, linear for nearly colinear tensors) may
write each slice's likely result through `x.emit` during a statistics pass, while the slice is in cache, and
return ALL_EMITTED when the statistics confirm it: one pass over the inputs instead of two. Otherwise it returns a
merge_chunk as usual, whose results overwrite the emitted ones.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from ..ops.chunks import map_chunks
from ..ops.slices import Slices
from .inputs import Inputs, RandomField

ChunkMerge = Callable[[Tensor, slice], Tensor]


class Emit(Protocol):
    def __call__(self, result: Tensor, sl: slice, bound: float = math.inf) -> None:
        """Store one slice's (C,) result early (from any thread).

        bound: the result was computed in float32 from values of magnitude at most about `bound` (within
        rounding), by steps that never exceed twice that (a lerp, a convex combination). The executor then knows
        the slice is finite in the output dtype without checking it, when the bound is far inside both float32's
        and that dtype's range; a NaN or infinite bound is always checked."""


class _AllEmitted:
    def __repr__(self) -> str:
        return "ALL_EMITTED"


ALL_EMITTED = _AllEmitted()  # what prepare returns when every slice's result went out through x.emit


@dataclass(frozen=True)
class SliceInputs:
    """What a sliced method sees: like Inputs, with the stack available only slice by slice."""

    slices: Slices
    weights: Tensor
    shape: tuple[int, ...]  # S, the tensor's shape
    key: str = ""
    seed: int = 0
    emit: Emit | None = None  # stores a slice's result early; None: not offered

    @classmethod
    def of(cls, x: Inputs, emit: Emit | None = None) -> "SliceInputs":
        """The slices of an in-memory Inputs."""
        return cls(Slices.of_stack(x.stack.reshape(x.count, -1)), x.weights, tuple(x.stack.shape[1:]), x.key, x.seed,
                   emit)

    @property
    def count(self) -> int:
        return self.slices.count

    @property
    def random(self) -> RandomField:
        return RandomField(self.seed, self.key)


Prepare = Callable[[SliceInputs, Any], "ChunkMerge | _AllEmitted"]


def merge_whole(prepare: Prepare, x: Inputs, p: Any) -> Tensor:
    """Run a sliced method over an in-memory stack: the (*S) result."""
    emitted = torch.empty(x.stack[0].numel(), dtype=x.stack.dtype, device=x.stack.device)

    def emit(result: Tensor, sl: slice, bound: float = math.inf) -> None:
        emitted[sl] = result

    merge_chunk = prepare(SliceInputs.of(x, emit), p)
    if merge_chunk is ALL_EMITTED:
        return emitted.reshape(x.stack.shape[1:])
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
