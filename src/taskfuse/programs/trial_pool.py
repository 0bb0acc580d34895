"""Where independent trials run: this process, a local process pool, or Ray (a local instance, or a cluster by address).

A trial function must be a module-level function (picklable); it may keep expensive state (an evaluator, its
tokenised data) in its module between calls, since both pools reuse their worker processes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol

import psutil

from ..errors import UsageError


class TrialPool(Protocol):
    kind: str
    workers: int

    def imap(self, fn: Callable, items: list) -> Iterator: ...

    def map(self, fn: Callable, items: list) -> list: ...

    def close(self) -> None: ...


def workers_that_fit(per_worker_bytes: int, cap: int | None = None) -> int:
    """As many workers as there are cores and as fit in the memory available now (at least one)."""
    fit = psutil.virtual_memory().available // max(per_worker_bytes, 1)
    return max(1, min(os.cpu_count() or 1, int(fit), cap or 1 << 30))


class InProcessTrialPool:
    """Trials one after another in this process, with all its threads: the pool when none is asked for."""

    kind = "in-process"
    workers = 1

    def imap(self, fn: Callable, items: list) -> Iterator:
        return map(fn, items)

    def map(self, fn: Callable, items: list) -> list:
        return list(self.imap(fn, items))

    def close(self) -> None:
        pass


class ProcessTrialPool:
    kind = "process"

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))  # no forked torch threads

    def imap(self, fn: Callable, items: list) -> Iterator:
        """Results in the items' order, each as soon as it and those before it are done."""
        return self._pool.map(fn, items)

    def map(self, fn: Callable, items: list) -> list:
        return list(self.imap(fn, items))

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class RayTrialPool:
    """Trials as Ray tasks; `address` None starts a local Ray with `workers` CPUs, else connects to that cluster."""

    kind = "ray"

    def __init__(self, workers: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise UsageError("Ray is not installed. Fix: pip install 'taskfuse[search]' (or ray), or run the "
                             "trials in a local process pool with --pool process.") from None
        self.ray, self.workers = ray, workers
        kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
        self._remote: dict[Callable, object] = {}

    def imap(self, fn: Callable, items: list) -> Iterator:
        remote = self._remote.setdefault(fn, self.ray.remote(num_cpus=1)(fn))
        refs = [remote.remote(item) for item in items]  # all submitted now; results read back in order
        return (self.ray.get(ref) for ref in refs)

    def map(self, fn: Callable, items: list) -> list:
        return list(self.imap(fn, items))

    def close(self) -> None:
        self.ray.shutdown()


def threads_per_worker(workers: int) -> int:
    """Each of `workers` trial processes gets an equal share of the cores (at least one thread)."""
    return max(1, (os.cpu_count() or 1) // workers)


def trial_pool(kind: str, workers: int, address: str | None = None):
    if kind == "in-process":
        return InProcessTrialPool()
    if kind == "ray" or address:
        return RayTrialPool(workers, address)
    if kind == "process":
        return ProcessTrialPool(workers)
    raise UsageError(f"unknown trial pool {kind!r}: use process or ray (or in-process)")
