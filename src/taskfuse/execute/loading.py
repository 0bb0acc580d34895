"""Reading a job's input tensors, checked for NaN/Inf, optionally one job ahead in a background thread."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import NonFiniteInputError
from ..io.checkpoint import Checkpoint
from ..plan.plan import Plan, Source, TensorJob


@dataclass
class LoadedJob:
    job: TensorJob
    sources: list[torch.Tensor]
    base: torch.Tensor | None


def read_checked(plan: Plan, ckpts: Sequence[Checkpoint], src: Source) -> torch.Tensor:
    t = ckpts[src.checkpoint].read(src.tensor)
    if t.dtype.is_floating_point and not torch.isfinite(t).all():
        role = "base" if plan.has_base and src.checkpoint == 0 else "model"
        raise NonFiniteInputError(
            f"{role} {plan.checkpoints[src.checkpoint]!r}: tensor {src.tensor!r} contains NaN or Inf. "
            "Fix: repair or replace this checkpoint (its training probably diverged); nothing was written.")
    return t


def load_job(plan: Plan, ckpts: Sequence[Checkpoint], job: TensorJob) -> LoadedJob:
    sources = [read_checked(plan, ckpts, s) for s in job.sources]
    base = read_checked(plan, ckpts, job.base) if job.base else None
    return LoadedJob(job, sources, base)


def prefetched(plan: Plan, ckpts: Sequence[Checkpoint], jobs: Sequence[TensorJob]) -> Iterator[LoadedJob]:
    """Yield loaded jobs in order while the next one is read in a background thread.

    Reading (mmap page-ins, dtype conversion) releases the GIL, so it overlaps with the previous job's math.
    """
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskfuse-read") as pool:
        pending: Future = pool.submit(load_job, plan, ckpts, jobs[0])
        for nxt in list(jobs[1:]) + [None]:
            current = pending.result()
            if nxt is not None:
                pending = pool.submit(load_job, plan, ckpts, nxt)
            yield current
