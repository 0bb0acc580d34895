"""TIES trimming over the whole model, as in the paper's code: one magnitude cut-off per model, not per tensor.

The paper's implementation flattens each task vector across all parameters and keeps its global top-k. Per-tensor
trimming (the default, as PEFT and mergekit do) keeps k within every tensor instead. This program computes each
model's global threshold and writes it into the jobs' parameters, so the executor and the plan stay per-tensor.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..errors import SpecError
from ..execute.loading import load_job
from ..io.checkpoint import Checkpoint
from ..ops.masks import keep_count
from ..plan.plan import Plan, TensorJob


def _densities(jobs: list[TensorJob]) -> tuple[float, ...]:
    found = {tuple(j.params["density"]) if isinstance(j.params["density"], (list, tuple)) else
             (j.params["density"],) * len(j.sources) for j in jobs}
    if len(found) != 1:
        raise SpecError("trim='model' needs one density per model for all trimmed tensors (no schedules or "
                        f"overrides of density); found {sorted(found)}")
    return found.pop()


def model_thresholds(plan: Plan, ckpts: Sequence[Checkpoint], jobs: list[TensorJob]) -> tuple[float, ...]:
    """Per model, the |τ| of its k-th largest entry over all `jobs` (k = density · total entries)."""
    densities = _densities(jobs)
    magnitudes: list[list[torch.Tensor]] = [[] for _ in densities]
    for job in jobs:
        loaded = load_job(plan, ckpts, job)
        base = loaded.base.float()
        for i, src in enumerate(loaded.sources):
            magnitudes[i].append((src.float() - base).abs().reshape(-1))
    thresholds = []
    for density, parts in zip(densities, magnitudes):
        flat = torch.cat(parts)
        k = keep_count(density, flat.numel())
        thresholds.append(float(torch.topk(flat, k, sorted=False).values.min()))
    return tuple(thresholds)


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
