"""Write a plan's merged tensors, in plan order, into its safetensors shards from one background thread."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..io.direct_file import BLOCK
from ..io.safetensors_stream import SafetensorsStreamWriter, file_header
from ..plan.plan import Plan, TensorJob
from .buffers import BufferPool
from .in_flight import InFlight

METADATA = {"format": "pt"}  # the safetensors header's metadata, as transformers writes it


def jobs_by_shard(plan: Plan) -> dict[str, list[TensorJob]]:
    """Each shard's jobs in plan order, shards in the plan's shard order."""
    return {shard: [job for job in plan.jobs if job.shard == shard] for shard in plan.shards}


def jobs_in_write_order(plan: Plan) -> list[TensorJob]:
    """Every job, shard by shard in the plan's shard order, each shard's jobs in plan order."""
    return [job for jobs in jobs_by_shard(plan).values() for job in jobs]


class ShardWriter:
    """Takes (job, tensor) in jobs_in_write_order and streams each into its shard: a shard's file is opened on its
    first tensor and closed (renamed into place, fsynced) after its last, on the writer thread, so the math goes on
    with the next shard meanwhile. The caller recycles nothing: written tensors go back to the pool here.
    """

    def __init__(self, plan: Plan, stage: Path, pool: BufferPool):
        self.stage, self.pool = stage, pool
        # Outputs may queue while the next jobs compute, up to the largest output's bytes (always one). The device
        # writes at a steady rate while jobs finish unevenly (small k/v projections after a large MLP tensor);
        # with one output queued, the math threads waited on writes for ~7% of a SLERP merge here.
        self._queued = InFlight(max((j.nbytes for j in plan.jobs), default=0))
        self.layouts = {shard: [(j.name, j.shape, getattr(torch, j.dtype)) for j in jobs]
                        for shard, jobs in jobs_by_shard(plan).items()}
        self.file_offsets = {name: offset for layout in self.layouts.values()
                             for name, offset in file_header(layout, METADATA)[1].items()}
        self.remaining = {shard: len(layout) for shard, layout in self.layouts.items()}
        self.current: SafetensorsStreamWriter | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskfuse-write")

    def address_for(self, job: TensorJob) -> tuple[int, int]:
        """Where the job's output should sit in memory (BufferPool.take) to be written without a copy."""
        return BLOCK, self.file_offsets[job.name] % BLOCK

    def submit(self, job: TensorJob, tensor: torch.Tensor) -> None:
        """Queue one output; waits while the queue is full (bounds memory), and re-raises a failed write here."""
        while not self._queued.has_room(job.nbytes):
            self._queued.pop_oldest()
        self._queued.add(self._thread.submit(self._write, job, tensor), job.nbytes)

    def finish(self) -> None:
        """Wait for every queued write; every shard is then complete on disk."""
        while self._queued:
            self._queued.pop_oldest()
        self._thread.shutdown()

    def abort(self) -> None:
        """Drop queued writes, wait for the one running, and remove the shard being written."""
        self._queued.cancel()
        self._thread.shutdown()
        if self.current is not None:
            self.current.abort()
            self.current = None

    def _write(self, job: TensorJob, tensor: torch.Tensor) -> None:
        if self.current is None:
            self.current = SafetensorsStreamWriter(self.stage / job.shard, self.layouts[job.shard], METADATA)
        self.current.write(job.name, tensor)
        self.pool.give(tensor)
        self.remaining[job.shard] -= 1
        if not self.remaining[job.shard]:
            self.current.close()
            self.current = None
