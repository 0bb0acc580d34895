"""TIES trimming over the whole model, as in the paper's code: one magnitude cut-off per model, not per tensor.

The paper's implementation flattens each task vector across all parameters and keeps its global top-k. Per-tensor
trimming (the default, as PEFT and mergekit do) keeps k within every tensor instead. This program computes each
model's global threshold and writes it into the jobs' parameters, so the executor and the plan stay per-tensor.
"""
from __future__ import annotations

from dataclasses import replace
import math
from collections.abc import Iterator
from typing import Sequence

import torch

from ..errors import SpecError
from ..execute.loading import load_job
from ..io.checkpoint import Checkpoint
from ..ops.cuts import keep_count
from ..ops.selection import HI_BINS, LO_BINS, row_bincounts, kth_bucket
from ..plan.plan import Plan, TensorJob


def _densities(jobs: list[TensorJob]) -> tuple[float, ...]:
    found = {tuple(j.params["density"]) if isinstance(j.params["density"], (list, tuple)) else
             (j.params["density"],) * len(j.sources) for j in jobs}
    if len(found) != 1:
        raise SpecError("trim='model' needs one density per model for all trimmed tensors (no schedules or "
                        f"overrides of density); found {sorted(found)}")
    return found.pop()


def model_thresholds(plan: Plan, ckpts: Sequence[Checkpoint], jobs: list[TensorJob]) -> tuple[float, ...]:
    """Per model, the |τ| of its k-th largest entry over all `jobs` (k = density · total entries).

    Found by radix selection in two streamed passes over the model, one tensor at a time (see ops/selection.py:
    |τ| as int32 bits orders like |τ|): the high 16 bits' histogram over every tensor gives each model's bucket,
    the low 16 bits of the entries inside it give the value. Memory: one job's inputs and two histograms per
    model, never the whole model's task vectors.
    """
    densities = _densities(jobs)
    total = sum(math.prod(j.shape) for j in jobs)
    counts = torch.tensor([keep_count(d, total) for d in densities])
    high = torch.zeros(len(densities), HI_BINS, dtype=torch.int64)
    for bits in _magnitude_bits(plan, ckpts, jobs):
        high += row_bincounts(bits >> 16, HI_BINS)
    buckets, above = kth_bucket(high, counts)
    low = torch.zeros(len(densities), LO_BINS, dtype=torch.int64)
    for bits in _magnitude_bits(plan, ckpts, jobs):
        for row, (model_bits, bucket) in enumerate(zip(bits, buckets.tolist())):
            low[row] += torch.bincount(model_bits[(model_bits >> 16) == bucket] & 0xFFFF, minlength=LO_BINS)
    within, _ = kth_bucket(low, counts - above)
    return tuple((buckets << 16 | within).to(torch.int32).view(torch.float32).tolist())


def _magnitude_bits(plan: Plan, ckpts: Sequence[Checkpoint], jobs: list[TensorJob]) -> Iterator[torch.Tensor]:
    """Per job, (T, N) int32: the bits of |τ| of each model's flattened task vector."""
    for job in jobs:
        loaded = load_job(plan, ckpts, job)
        base = loaded.base.float()
        yield torch.stack([(src.float() - base).abs_().reshape(-1) for src in loaded.sources]).view(torch.int32)


def apply_whole_model_trim(plan: Plan, ckpts: Sequence[Checkpoint]) -> Plan:
    """The plan with `thresholds` filled in for every job that trims over the whole model."""
    jobs = [j for j in plan.jobs if j.params.get("trim") == "model"]
    if not jobs:
        return plan
    if len({len(j.sources) for j in jobs}) != 1:
        raise SpecError("trim='model' needs every trimmed tensor present in all models (tensor_rules.missing)")
    thresholds = model_thresholds(plan, ckpts, jobs)
    rewritten = [replace(j, params={**j.params, "thresholds": thresholds}) if j.params.get("trim") == "model" else j
                 for j in plan.jobs]
    return replace(plan, jobs=tuple(rewritten))
