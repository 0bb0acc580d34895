"""Run a Plan: stream every job through its method into safetensors shards, staged and renamed atomically."""
from __future__ import annotations

import math
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml

from ..errors import UsageError
from ..io.checkpoint import Checkpoint
from ..io.gguf_read import GGUFCheckpoint
from ..io.layout import copy_side_files, write_config, write_index
from ..io.sentence_transformers_layout import SentenceTransformersLayout, sentence_transformers_layout
from ..io.output import staged_output
from ..ops.slices import Runner, run_in_order
from ..plan.plan import Plan, TensorJob
from .allocator import reuse_freed_memory
from .buffers import BufferPool
from .compute import compute_job, streams
from .device import resolve_device
from .loading import LoadedJob, prefetched, stored_bytes
from .model_card import model_card
from .shards import ShardWriter, jobs_in_write_order

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class MergeResult:
    out: Path
    plan: Plan
    seconds: float
    peak_rss_bytes: int  # of the whole process so far (ru_maxrss)
    files: tuple[str, ...]


def execute(
    plan: Plan,
    checkpoints: Sequence[Checkpoint],
    out: str | Path,
    *,
    device: str = "cpu",
    threads: int | None = None,
    progress: Progress | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> MergeResult:
    """Write the merged model described by `plan` to `out`, which appears only when complete."""
    start = time.perf_counter()
    torch_device = resolve_device(device)
    if threads is not None and threads < 1:
        raise UsageError(f"threads={threads}: give 1 or more worker threads, or leave it unset for one per core.")
    reuse_freed_memory()
    previous_threads = torch.get_num_threads()
    workers = threads or os.cpu_count() or 1
    out = Path(out)
    modules = _sentence_modules(plan, checkpoints)  # refused before anything is written, not after the merge
    try:
        with (staged_output(out, "merge") as stage,
              ThreadPoolExecutor(workers, thread_name_prefix="taskfuse-math") as math):
            compute = Compute(torch_device, workers, thread_runner(math, workers))
            _write_shards(plan, checkpoints, stage, compute, progress)
            _write_side_files(plan, checkpoints, stage)
            if modules is not None:
                modules.copy_to(stage)
            for name, content in (extra_files or {}).items():
                (stage / Path(name).name).write_bytes(content)
            files = tuple(sorted(p.name for p in stage.iterdir()))
    finally:
        torch.set_num_threads(previous_threads)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return MergeResult(out, plan, time.perf_counter() - start, peak, files)


def job_footprint(job: TensorJob, ckpts: Sequence[Checkpoint]) -> int:
    """Bytes of the pooled buffers one job uses: inputs as stored, the float32 stacks (models and their
    statistics) and the output."""
    stored = stored_bytes(job, ckpts)
    numel = job.nbytes // getattr(torch, job.dtype).itemsize
    statistics = sum(math.prod(ckpts[s.checkpoint].meta(s.tensor).shape) for s in job.statistics)
    return stored + (len(job.sources) * numel + statistics) * 4 + job.nbytes


@dataclass(frozen=True)
class Compute:
    device: torch.device
    workers: int
    runner: Runner  # spreads a streamed job's slices over the worker threads

    def job(self, loaded: LoadedJob, seed: int, pool: BufferPool,
            out_address: tuple[int, int] | None = None) -> torch.Tensor:
        # Streamed jobs parallelise over slices in our threads, each running torch single-threaded (torch's own
        # threads on cache-sized slices cost more in synchronisation than they gain); whole-tensor jobs (SVDs)
        # use torch's threads.
        torch.set_num_threads(1 if streams(loaded.job, self.device) else self.workers)
        return compute_job(loaded, seed, self.device, pool, self.runner, out_address)


def thread_runner(threads: ThreadPoolExecutor, workers: int) -> Runner:
    """A Slices runner that splits a pass into contiguous groups of slices run on `threads`."""

    def run(work, slices):
        if workers == 1 or len(slices) < 2:
            return run_in_order(work, slices)
        parts = min(len(slices), 4 * workers)  # a few groups per worker balance uneven progress
        return list(threads.map(work, [slices[i * len(slices) // parts:(i + 1) * len(slices) // parts]
                                       for i in range(parts)]))

    return run


def _write_shards(plan: Plan, ckpts: Sequence[Checkpoint], stage: Path, compute: Compute, progress) -> None:
    done, total = 0, len(plan.jobs)
    # keep at most two jobs' worth of idle buffers (one computing, one prefetched): bounded for peak RSS
    pool = BufferPool(2 * max((job_footprint(j, ckpts) for j in plan.jobs), default=0))
    # One read-ahead and one writer across all shards, so a shard boundary is no pipeline bubble: disk writes
    # overlap the next jobs' math and the next job's read overlaps this one's.
    writer = ShardWriter(plan, stage, pool)
    try:
        # streamed jobs check their inputs for NaN/Inf as they slice them, the others when they are read
        jobs = jobs_in_write_order(plan)
        ahead = max((stored_bytes(j, ckpts) for j in jobs), default=0)  # as much as the largest job reads
        for loaded in prefetched(plan, ckpts, jobs, pool, lambda job: streams(job, compute.device), ahead):
            writer.submit(loaded.job, compute.job(loaded, plan.seed, pool, writer.address_for(loaded.job)))
            done += 1
            if progress:
                progress(done, total, loaded.job.name)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    if len(plan.shards) > 1:
        write_index(stage, {j.name: j.shard for j in plan.jobs}, sum(j.nbytes for j in plan.jobs))


def _write_side_files(plan: Plan, ckpts: Sequence[Checkpoint], stage: Path) -> None:
    config_ckpt = ckpts[plan.config_from] if plan.config_from is not None else None
    tok_ckpt = ckpts[plan.tokenizer_from] if plan.tokenizer_from is not None else config_ckpt
    write_config(config_ckpt.config if config_ckpt else None, stage, getattr(torch, plan.dtype), plan.config_updates)
    copy_side_files(side_files_root(config_ckpt), side_files_root(tok_ckpt), stage)
    if isinstance(tok_ckpt, GGUFCheckpoint):  # its tokenizer lives in the file's metadata
        tok_ckpt.save_tokenizer(stage)
    alignment = getattr(tok_ckpt, "alignment", None)
    if alignment is not None:  # vocabularies aligned by token: the output's tokenizer (e.g. the union)
        alignment.output.save(stage)
    (stage / "README.md").write_text(model_card(plan))
    (stage / "taskfuse_spec.yaml").write_text(yaml.safe_dump(plan.spec, sort_keys=False))


def _sentence_modules(plan: Plan, ckpts: Sequence[Checkpoint]) -> SentenceTransformersLayout | None:
    """The config model's sentence-transformers modules (pooling, normalisation), if it is such a folder."""
    config_ckpt = ckpts[plan.config_from] if plan.config_from is not None else None
    roots = {c.ref: side_files_root(c) for c in ckpts}
    return sentence_transformers_layout(side_files_root(config_ckpt), {r: p for r, p in roots.items() if p})


def side_files_root(ckpt: Checkpoint | None) -> Path | None:
    """The folder whose tokenizer and generation config belong to `ckpt`: none for a GGUF file, whose folder may
    hold other models' files."""
    return None if ckpt is None or isinstance(ckpt, GGUFCheckpoint) else ckpt.root
