"""Elementwise work in slices of the flattened tensor.

Full-size temporaries (tens of MB each) are fresh memory maps that page-fault on first touch, which on large
checkpoints costs more than the arithmetic. Slices of CHUNK elements keep temporaries small enough for the C
allocator to recycle and for the CPU caches to hold, so results are identical and merges several times faster.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

CHUNK = 1 << 18  # elements: 1 MB of float32, cache-sized and below glibc's mmap threshold (measured best of 2^18..2^22)


def chunk_slices(n: int, size: int = CHUNK) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def map_chunks(fn: Callable[[Tensor, slice], Tensor], flat: Tensor) -> Tensor:
    """(N,) output of fn applied to each (T, chunk) slice of a (T, N) stack, in order."""
    out = torch.empty(flat.shape[1], dtype=flat.dtype, device=flat.device)
    for sl in chunk_slices(flat.shape[1]):
        out[sl] = fn(flat[:, sl], sl)
    return out
