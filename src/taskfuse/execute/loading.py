"""Reading a job's input tensors, checked for NaN/Inf, optionally one job ahead in a background thread."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from ..errors import NonFiniteInputError
from ..io.checkpoint import Checkpoint
from ..plan.plan import Plan, Source, TensorJob
from .buffers import BufferPool


@dataclass
class LoadedJob:
    job: TensorJob
    sources: list[torch.Tensor]
    base: torch.Tensor | None
    # raises NonFiniteInputError naming the first input with NaN/Inf; a no-op once it has run (see load_job)
    verify: Callable[[], None] = field(default=lambda: None)


def check_finite(plan: Plan, tensors: Sequence[torch.Tensor], sources: Sequence[Source]) -> None:
    """Raise NonFiniteInputError naming the first input holding NaN/Inf.

    A sum in the stored dtype is one vectorised reduction (30x faster than isfinite on bf16 here) and is
    non-finite whenever any input is; only then (or on a harmless overflow of the sum) is each input checked.
    """
    floats = [(t, s) for t, s in zip(tensors, sources) if t.dtype.is_floating_point]
    if all(torch.isfinite(t.sum()) for t, _ in floats):
        return
    for t, src in floats:
        if not torch.isfinite(t).all():
            role = "base" if plan.has_base and src.checkpoint == 0 else "model"
            raise NonFiniteInputError(
                f"{role} {plan.checkpoints[src.checkpoint]!r}: tensor {src.tensor!r} contains NaN or Inf. "
                "Fix: repair or replace this checkpoint (its training probably diverged); nothing was written.")


def read_into_pool(ckpts: Sequence[Checkpoint], src: Source, pool: BufferPool | None) -> torch.Tensor:
    """The stored tensor: mapped from the page cache where possible (no copy), else read into a pool buffer.
    Inputs are only ever read, never written, so a mapped tensor serves as well as a copy."""
    ckpt = ckpts[src.checkpoint]
    mapped = ckpt.map(src.tensor)
    if mapped is not None:
        return mapped
    meta = ckpt.meta(src.tensor)
    return ckpt.read(src.tensor, out=pool.take(meta.shape, meta.dtype) if pool else None)


def load_job(plan: Plan, ckpts: Sequence[Checkpoint], job: TensorJob, pool: BufferPool | None = None,
             defer_check: bool = False) -> LoadedJob:
    """The job's inputs, checked for NaN/Inf now, or with defer_check by the caller through `verify` (a streamed
    merge folds the check into its own first pass over the slices instead of reading every input once more)."""
    tensors = [read_into_pool(ckpts, s, pool) for s in job.inputs]
    count = len(job.sources)
    checked: list[bool] = []

    def verify() -> None:  # exact and slow: runs at most once per job
        if not checked:
            checked.append(True)
            check_finite(plan, tensors, job.inputs)

    if not defer_check:
        verify()
    return LoadedJob(job, tensors[:count], tensors[count] if job.base else None, verify)


def prefetched(plan: Plan, ckpts: Sequence[Checkpoint], jobs: Sequence[TensorJob],
               pool: BufferPool | None = None,
               defer_check: Callable[[TensorJob], bool] = lambda job: False) -> Iterator[LoadedJob]:
    """Yield loaded jobs in order while the next one is read in a background thread.

    Reading (positioned file reads, finite checks) releases the GIL, so it overlaps with the previous job's math.
    """
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskfuse-read") as reader:
        pending: Future = reader.submit(load_job, plan, ckpts, jobs[0], pool, defer_check(jobs[0]))
        for nxt in list(jobs[1:]) + [None]:
            current = pending.result()
            if nxt is not None:
                pending = reader.submit(load_job, plan, ckpts, nxt, pool, defer_check(nxt))
            yield current
