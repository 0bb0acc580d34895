"""Searching a method's parameters on the zoo: per-expert weights, and the method's λ and density where it has them.

Each trial merges the zoo's experts through the public API and scores the merge on the validation split, in a
worker process that builds the zoo (from the cache) and tokenises the validation data once. `taskfuse search`
scores per-expert weights this way, and `taskfuse bench` its grid of each method's parameters (grid_trial).
"""
from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path

import torch

from .. import api
from ..eval.harness import Evaluator, as_dict, mean, normalized
from ..methods import get_method
from ..programs.search import Dimension
from ..zoo.build import Zoo, build_zoo
from ..zoo.recipe import variant_named
from .grid import GRIDS
from .merging import zoo_spec

WORKER_BYTES = 3 << 30  # a trial worker's peak RSS on the full zoo: encoder, 8 experts' merge, evaluator (measured)


def search_space(zoo: Zoo, method: str) -> list[Dimension]:
    """Weights in [0, 1] per expert; λ over the method's benchmark grid, widened by half; density in [0.05, 0.9]."""
    space = [Dimension(f"weight:{i}", 0.0, 1.0) for i in range(len(zoo.experts))]
    names = {f.name for f in fields(get_method(method).params)}
    scales = [p["scale"] for p in GRIDS.get(method, []) if "scale" in p]
    if "scale" in names and method != "task_arithmetic" and scales:  # task arithmetic's λ is the weights' scale
        space.append(Dimension("scale", min(scales) / 2, max(scales) * 1.5))
    if "density" in names:
        space.append(Dimension("density", 0.05, 0.9))
    return space


def trial_spec(zoo: Zoo, method: str, params: dict, seed: int) -> dict:
    spec = zoo_spec(zoo, method, {k: v for k, v in params.items() if not k.startswith("weight:")}, seed)
    for i, model in enumerate(spec["models"]):
        model["weight"] = params[f"weight:{i}"]
    return spec


_WORKER: dict = {}  # per worker process: the zoo, its validation evaluator and the experts' validation scores


def _worker_zoo(variant: str, task_files: tuple[str, ...]) -> tuple[Zoo, Evaluator]:
    """The zoo (from the cache) and its validation evaluator, built once per worker process."""
    key = (variant, task_files)
    if _WORKER.get("key") != key:
        zoo = build_zoo(variant_named(variant), 1, None, task_files)
        evaluator = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "validation")
        _WORKER.clear()
        _WORKER.update(key=key, zoo=zoo, evaluator=evaluator)
    return _WORKER["zoo"], _WORKER["evaluator"]


def _merge_and_score(variant: str, task_files: tuple[str, ...], threads: int | None, spec_of) -> tuple:
    """In a worker: set its threads (None: the main process's own), merge the spec `spec_of(zoo)` gives in a
    temporary folder and score it on validation. Returns the merge's result and its scores."""
    if threads is not None:
        torch.set_num_threads(threads)
    zoo, evaluator = _worker_zoo(variant, task_files)
    with tempfile.TemporaryDirectory(prefix="taskfuse-trial-") as work:
        merged = api.merge(spec_of(zoo), Path(work) / "merged", threads=threads)
        scores = evaluator.score(Path(work) / "merged")
    return merged, scores


def score_trial(item: tuple) -> float:
    """A trial in a worker: merge with `params` (per-expert weights included) and return the mean normalised
    validation accuracy."""
    variant, task_files, method, params, seed, threads = item
    _, scores = _merge_and_score(variant, task_files, threads, lambda zoo: trial_spec(zoo, method, params, seed))
    zoo, evaluator = _worker_zoo(variant, task_files)  # cached: the one the merge used
    if "experts" not in _WORKER:
        _WORKER["experts"] = {t: evaluator.score_task(e.model_dir, t) for t, e in zoo.experts.items()}
    return mean(normalized(scores, _WORKER["experts"]).values())


def grid_trial(item: tuple) -> dict:
    """One point of the benchmark's grid in a worker: merge the zoo with the method's `params` (unit weights) and
    return the merge's seconds and each task's validation scores (the caller normalises them)."""
    variant, task_files, method, params, seed, threads = item
    merged, scores = _merge_and_score(variant, task_files, threads, lambda zoo: zoo_spec(zoo, method, params, seed))
    return {"merge_seconds": merged.seconds, "scores": as_dict(scores)}
