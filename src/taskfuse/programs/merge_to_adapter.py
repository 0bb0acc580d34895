"""A merge written as a PEFT LoRA adapter on the spec's base instead of a full model.

Exact where the merge is linear in the adapters' updates (task_arithmetic, or a linear merge whose coefficients sum
to 1, over LoRA adapters): the factors are concatenated, B = [c₁s₁B₁ | c₂s₂B₂ | …], A = [A₁; A₂; …], so B·A is
Σ cᵢ·ΔWᵢ to float32 rounding and the rank is the sum of the adapters' ranks. Any other merge (or full fine-tunes
among the models) is merged as usual into a hidden folder and re-factorised by truncated SVD (extract_lora), with
the error of each module reported.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..errors import SpecError, UsageError
from ..io.adapter import AdapterCheckpoint
from ..io.output import check_output_dir
from ..plan.plan import TensorJob
from .adapter_files import AdapterBuilder, write_adapter
from .adapter_task import task_fields
from .extract_lora import REPORT as EXTRACTION_REPORT
from .extract_lora import RankRule, extract_lora

REPORT = "taskfuse_adapter.json"
LINEAR_METHODS = ("task_arithmetic", "linear")


def merge_to_adapter(spec, out: str | Path, rule: RankRule | None = None, extra: dict | None = None) -> dict:
    """Write the merge `spec` describes as an adapter folder `out`; returns what is recorded in its report (with
    `extra`, e.g. how the weights were found, where the adapter is exact)."""
    from .. import api
    from ..plan.planner import build_plan
    merge_spec = api.as_spec(spec)
    if merge_spec.base is None:
        raise SpecError("an adapter output is an update of a base: add `base:` to the spec.")
    out = Path(out)
    check_output_dir(out, "adapter")
    if rule is not None:
        return refactorised(merge_spec, out, rule)
    plan, ckpts = build_plan(merge_spec)
    adapter = AdapterBuilder()
    problems: dict[str, list[str]] = {}  # reason → tensors
    for job in plan.jobs:
        reason = concatenate(job, ckpts, adapter) if job.rule == "merge" else None
        if reason:
            problems.setdefault(reason, []).append(job.name)
    if problems:
        listed = "\n".join(f"  - {reason}: {len(names)} tensor(s), e.g. {names[0]!r}"
                           for reason, names in problems.items())
        raise UsageError(f"this merge is not a sum of LoRA updates, so it has no exact adapter:\n{listed}\n"
                         "Fix: give --rank R or --energy E to re-factorise the merged update by truncated SVD.")
    base = ckpts[0]
    tensors, config = adapter.finish(merge_spec.base, {n: base.read(n) for n in base.tensors
                                                       if n.rpartition(".")[0] in adapter.siblings_needed()},
                                     task_fields(ckpts[1:], base.config))
    report = {"spec": merge_spec.model_dump(mode="json"), "exact": True,
              "ranks": adapter.ranks, "saved_whole": sorted(adapter.whole), **(extra or {})}
    write_adapter(out, tensors, config, REPORT, report)
    return {**report, "report_file": REPORT}


def coefficients(job: TensorJob) -> list[float] | None:
    """c with merged = base + Σ cᵢ·(θᵢ − base), or None if this job's merge is not of that form."""
    weights = list(job.weights)
    if job.method == "task_arithmetic":
        total = sum(weights) if job.params.get("normalize") else 1.0
        return [job.params.get("scale", 1.0) * w / total for w in weights]
    if job.method == "linear":
        c = [w / sum(weights) for w in weights] if job.params.get("normalize", True) else weights
        return c if abs(sum(c) - 1) < 1e-9 else None
    return None


def concatenate(job: TensorJob, ckpts, adapter: AdapterBuilder) -> str | None:
    """Add the job's output to `adapter`; or the reason it cannot be, without touching `adapter`."""
    c = coefficients(job)
    if c is None:
        return f"method {job.method!r} is not a sum of the updates"
    base, base_weight = ckpts[0], []  # the base tensor, read once when a source replaces the module whole

    def base_value() -> torch.Tensor:
        if not base_weight:
            base_weight.append(base.read(job.name).float())
        return base_weight[0]

    factors, whole = [], []
    for ci, src in zip(c, job.sources):
        ckpt = ckpts[src.checkpoint]
        if not isinstance(ckpt, AdapterCheckpoint):
            return f"model {ckpt.ref!r} is a full fine-tune, whose update is not factored"
        update = ckpt.updates.get(job.name)
        if update is not None and update.magnitude is not None:
            return f"adapter {ckpt.ref!r} is DoRA, whose merged weight is not W + B·A"
        if update is not None and job.name not in ckpt.replaced:
            a, b = ckpt.factors.read(update.lora_a).float(), ckpt.factors.read(update.lora_b).float()
            factors.append((update.kind, a, b * (ci * update.scaling)))
        elif job.name in ckpt.replaced:
            whole.append(ci * (ckpt.read(job.name).float() - base_value()))
    if factors and whole:
        return "a LoRA module in one adapter is stored whole in another"
    if factors:
        kinds = {k for k, _, _ in factors}
        if len(kinds) > 1:
            return f"adapters factor the tensor differently ({sorted(kinds)})"
        adapter.add_factors(job.name.removesuffix(".weight"), kinds.pop(), torch.cat([a for _, a, _ in factors]),
                            torch.cat([b for _, _, b in factors], dim=1))
    elif whole:
        adapter.add_whole(job.name, base_value() + sum(whole))
    return None


def refactorised(merge_spec, out: Path, rule: RankRule) -> dict:
    from .. import api
    from ..plan.planner import open_checkpoints
    opened = open_checkpoints(merge_spec)  # the base first (merge_spec has one)
    # named like a staging folder, so that a later run removes it if this process is killed mid-way
    staging = out.resolve().parent / f".{out.name}.partial-merge-{os.getpid()}"
    try:
        api.merge(merge_spec.model_copy(update={"dtype": "float32"}), staging)
        result = extract_lora(staging, merge_spec.base, out, rule, label="the merge of the spec",
                              task=task_fields(opened[1:], opened[0].config))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"spec": merge_spec.model_dump(mode="json"), "exact": False, "summary": result.summary(),
            "report_file": EXTRACTION_REPORT}
