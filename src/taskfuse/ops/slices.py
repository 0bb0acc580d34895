"""A (T, N) float32 stack that is read slice by slice, never held whole.

Methods that need statistics of a whole tensor (a top-k threshold, a norm, an angle) make passes over a `Slices`
and then merge slice by slice. The executor builds the slices from the stored (for example bf16) tensors on the fly,
so no full-size float32 stack is ever allocated, and it may run the slices of a pass on several threads; in memory
(`Slices.of_stack`) the same code runs over views of a stack. Slices are fixed by `chunks.chunk_slices`, so their
boundaries, and therefore every result, do not depend on the number of threads.
"""
from __future__ import annotations

import functools
import threading
from typing import Callable, Sequence, TypeVar

import torch
from torch import Tensor

from .chunks import chunk_slices

R = TypeVar("R")
# runner(work, slices) splits `slices` into contiguous groups, calls work(group) on each (in any order, on any
# thread) and returns the results in group order. The executor passes a thread pool's runner.
Runner = Callable[[Callable[[list[slice]], R], list[slice]], list[R]]


def run_in_order(work: Callable[[list[slice]], R], slices: list[slice]) -> list[R]:
    return [work(slices)] if slices else []


class Slices:
    def __init__(self, count: int, numel: int, read: Callable[[slice], Tensor], dtype: torch.dtype = torch.float32,
                 runner: Runner = run_in_order, size: int | None = None, checks: "InputChecks | None" = None):
        self.count, self.numel, self.dtype = count, numel, dtype
        self.read_unchecked = read  # (T, C) rows of one slice: a fresh tensor the caller may modify in place
        self.runner = runner
        self.slices = chunk_slices(numel) if size is None else chunk_slices(numel, size)
        self.checks = checks or InputChecks(None)

    def read(self, sl: slice) -> Tensor:
        """The (T, C) rows of one slice, checked for NaN/Inf until a whole pass has checked every slice."""
        chunk = self.read_unchecked(sl)
        if not self.checks.done and not bool(torch.isfinite(chunk.sum())):
            self.checks.on_nonfinite()
        return chunk

    def map(self, fn: Callable[[Tensor, slice], R]) -> list[R]:
        """fn(chunk, sl) for every slice, results in slice order: one pass over the stack."""
        groups = self.runner(lambda group: [fn(self.read(sl), sl) for sl in group], self.slices)
        self._passed()
        return [r for group in groups for r in group]

    def sum(self, fn: Callable[[Tensor, slice], Tensor], flags_nonfinite: bool = False) -> Tensor:
        """Σ over slices of fn(chunk, sl) (tensors of one shape), summed as the pass goes (so large per-slice
        statistics such as histograms are never all held): one pass.

        flags_nonfinite: the total is non-finite whenever some input entry is (sums of |x| or x², say), so the
        inputs are checked once on the total instead of slice by slice.
        """
        read = self.read_unchecked if flags_nonfinite else self.read

        def work(group: list[slice]) -> Tensor:
            total = fn(read(group[0]), group[0])
            for sl in group[1:]:
                total += fn(read(sl), sl)
            return total

        if not self.slices:
            raise ValueError("a pass over an empty stack has no shape; handle numel == 0 before the pass")
        total = functools.reduce(torch.add, self.runner(work, self.slices))
        if flags_nonfinite and not self.checks.done and not bool(torch.isfinite(total).all()):
            self.checks.on_nonfinite()
        self._passed()
        return total

    def _passed(self) -> None:
        """A pass over every slice has run (and raised if an input held NaN/Inf): later passes skip the check."""
        if self.slices is self.checks.slices:
            self.checks.done = True

    def gram(self, also: Callable[[Tensor, slice, Tensor], None] | None = None) -> Tensor:
        """(T, T) float64 Gram matrix of the rows (dot products of the flattened tensors), in one pass; `also`
        runs on each slice in the same pass, after its products: also(chunk, sl, the slice's (T, T) products)
        (it may then modify the chunk)."""
        if not self.slices:
            return torch.zeros(self.count, self.count, dtype=torch.float64)

        def products(chunk: Tensor, sl: slice) -> Tensor:
            gram = (chunk @ chunk.T).double()  # float64 sums of float32 slices
            if also is not None:
                also(chunk, sl, gram)
            return gram

        # a NaN/Inf entry makes its row's |x|² non-finite
        return self.sum(products, flags_nonfinite=True)

    def every(self, step: int) -> "Slices":
        """The same stack restricted to every step-th slice (a sample for estimates)."""
        sample = Slices(self.count, self.numel, self.read_unchecked, self.dtype, self.runner, checks=self.checks)
        sample.slices = self.slices[::step]
        return sample

    @classmethod
    def of_stack(cls, flat: Tensor, runner: Runner = run_in_order, size: int | None = None) -> "Slices":
        """Slices of an in-memory (T, N) stack."""
        return cls(flat.shape[0], flat.shape[1], lambda sl: flat[:, sl].clone(), flat.dtype, runner, size)

    @classmethod
    def of_stored(cls, sources: Sequence[Tensor], base: Tensor | None, runner: Runner = run_in_order,
                  on_nonfinite: Callable[[], None] | None = None) -> "Slices":
        """Slices of float32 rows built from stored tensors of any float dtype; with `base`, rows are t − base.

        With `on_nonfinite`, it is called whenever a slice's sum is not finite in the first pass that reads every
        slice: the slice then holds a NaN/Inf from some input (t − base is non-finite whenever t or base is), or
        its finite values overflowed the sum. The sum is taken while the slice is in cache, so checking costs far
        less than a separate pass, and later passes read the same inputs without it.
        """
        flats = [t.reshape(-1) for t in sources]
        flat_base = base.reshape(-1) if base is not None else None
        last_base = threading.local()  # each thread's last float32 base slice, for base_of

        def read(sl: slice) -> Tensor:
            chunk = torch.empty((len(flats), sl.stop - sl.start))
            for row, src in zip(chunk, flats):
                row.copy_(src[sl])  # a converting copy then an in-place subtract: 3x faster than a mixed-dtype one
            if flat_base is not None:
                base_rows = flat_base[sl].float()
                chunk -= base_rows
                last_base.slice = (sl.start, sl.stop, base_rows)
            return chunk

        def base_of(sl: slice) -> Tensor:
            cached = getattr(last_base, "slice", None)
            if cached is not None and cached[:2] == (sl.start, sl.stop):
                return cached[2]
            return flat_base[sl].float()

        slices = cls(len(flats), flats[0].numel(), read, torch.float32, runner)
        slices.checks = InputChecks(on_nonfinite, slices.slices)
        if flat_base is not None:
            slices.base_of = base_of
        return slices

    def base_of(self, sl: slice) -> Tensor:
        """The base's float32 entries at sl (of_stored with a base): the ones this thread converted when it last
        read sl, so adding the base back costs no second conversion."""
        raise ValueError("these slices were not built from stored tensors with a base")


class InputChecks:
    """Whether the inputs behind a Slices still need their NaN/Inf check, and what to call when one fails (it
    raises naming the input, or returns when a sum merely overflowed). Shared with samples of the stack."""

    def __init__(self, on_nonfinite: Callable[[], None] | None, slices: list[slice] | None = None):
        self.on_nonfinite = on_nonfinite or (lambda: None)
        self.slices = slices  # a pass over exactly these slices has checked every input entry
        self.done = on_nonfinite is None
