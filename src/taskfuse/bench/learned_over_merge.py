"""A learned method started from a data-free merge instead of from the base:

    θ(Λ) = θ₀ + Λ₀ ⊙ τ_merge + Σ_t Λ_t ⊙ τ_t,    Λ₀ = 1 and Λ_t = 0 at the start,

where τ_merge = (what a registered data-free method writes) − θ₀. Step 0 is that merge exactly; the coefficients
then learn, per tensor, how much more or less of the merge and of each task's own vector to take. This is our
design, not a paper's: aTLAS (arXiv:2407.02880) learns from Λ = 0 over the raw task vectors, and one scalar per
tensor and task cannot separate tasks that interfere inside a tensor, which subspace merges such as Iso-CTS do.
Here the subspace merge does that and the learning corrects what is left.

The result is two ordinary specs that `taskfuse merge` replays: the data-free merge (stage 1, written to a folder)
and task arithmetic at scale 1 over [that folder, the experts] with the learned per-tensor weights (stage 2).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import api
from ..errors import UsageError
from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score, as_dict, mean, normalized
from ..programs.learn import LearnProgress
from ..programs.learning_loop import DEFAULT_STEP, learn_coefficients
from ..programs.lazy_task_vectors import FileTaskVector
from ..programs.learned_spec import learned_spec
from ..programs.spec_learning import view_over_merge
from ..zoo.build import Zoo
from .learned import LearnedMethod, LearnedResult, describe, held_memory, learned_method, task_streams
from .learned_row import TENSOR_RULES, coefficients, summary
from .memory import RssPeak
from .merging import merge_zoo

# From a good point a smaller step than aTLAS's 5e-2 (set for learning from Λ = 0); the only rate tried. It is
# also AdaMerging's own rate here.
OVER_MERGE_LR = 1e-2
# The benchmark's rows that learn from its best data-free merge: row name → the learned method that continues.
OVER_MERGE_ROWS = {f"{name}_over_best": name for name in ("atlas", "atlas_fewshot", "adamerging_layer")}


@dataclass(frozen=True)
class OverMerge:
    """Which data-free merge (a registered method and its parameters) the learning starts from; the learned method
    that continues from it is passed to learn_over_merge."""

    method: str = "iso_cts"
    params: dict = field(default_factory=lambda: {"scale": 4.0})


def check_learnable_over_merge(method: LearnedMethod) -> None:
    if method.interpolation != "linear" or method.ties_density is not None:
        raise UsageError(f"{method.name} cannot start from a merge: it learns over its own vectors (SLERP weights or "
                         "TIES-trimmed ones). Fix: use atlas, atlas_fewshot or an adamerging method without ++.")
    if method.parameterization.kind == "partition":
        raise UsageError(f"{method.name} with partitions cannot be written as per-tensor weights over a merge. "
                         "Fix: use the layer or task parameterization.")


def write_start(zoo: Zoo, over: OverMerge, folder: Path) -> tuple[dict, float]:
    """Write the data-free merge the learning starts from; returns its spec and seconds."""
    return merge_zoo(zoo, over.method, over.params, folder, seed=zoo.variant.recipe.seed)


def learn_over_merge(zoo: Zoo, method: LearnedMethod, start: Path,
                     progress: LearnProgress | None = None, step: str = DEFAULT_STEP) -> LearnedResult:
    """Learn the coefficients from the merge written at `start` (write_start). The view's first task vector is the
    merge's, the others the experts' in zoo order."""
    check_learnable_over_merge(method)
    with RssPeak() as memory:
        base = load_encoder(zoo.base_dir)
        theta0 = base.state_dict()
        view = view_over_merge(base, FileTaskVector(start, theta0),
                               [FileTaskVector(e.model_dir, theta0) for e in zoo.experts.values()],
                               method.parameterization)
        streams = task_streams(zoo, method, zoo.variant.recipe.seed)
        torch.manual_seed(zoo.variant.recipe.seed)
        started = time.perf_counter()
        losses = learn_coefficients(view, streams, method.recipe, progress, step)
        seconds = time.perf_counter() - started
    return LearnedResult(view, losses, seconds, step, held_memory(view, memory.added))


def scored(scores: dict[str, Score], experts: dict[str, Score]) -> dict:
    """A row's test record: per-task scores, normalised by each task's expert, and their averages."""
    norm = normalized(scores, experts)
    return {"test": as_dict(scores), "test_normalized": norm,
            "average": {"accuracy": mean(s.accuracy for s in scores.values()),
                        "macro_f1": mean(s.macro_f1 for s in scores.values()), "normalized": mean(norm.values())}}


def over_merge_row(zoo: Zoo, method: LearnedMethod, over: OverMerge, start: Path, test: Evaluator,
                   experts: dict[str, Score], progress: LearnProgress | None = None) -> dict:
    """`method` learned from the merge written at `start` (write_start of `over`), written through the engine
    from its replayable spec, and scored on test from the written folder (as every learned row is)."""
    result = learn_over_merge(zoo, method, start, progress)
    models = [str(start)] + [str(e.model_dir) for e in zoo.experts.values()]
    spec = learned_spec(result.view, str(zoo.base_dir), models, seed=zoo.variant.recipe.seed, dtype="float32",
                        tensor_rules=TENSOR_RULES)
    with tempfile.TemporaryDirectory(prefix=f"taskfuse-over-{method.name}-") as work:
        begun = time.perf_counter()
        api.merge(spec, Path(work) / "merged", threads=None)
        merge_seconds = time.perf_counter() - begun
        scores = test.score(load_encoder(Path(work) / "merged"))
    return {"method": f"{method.name} over {over.method}", "kind": "learned",
            "learning": {**describe(method), "over": over.method, "over_params": over.params},
            "params": {**summary(method), "start": f"{over.method} {over.params}"},
            "data_seen": method.data_seen(zoo), "losses": [round(x, 5) for x in result.losses],
            "seconds": {"learn": round(result.seconds, 1), "merge": round(merge_seconds, 1)},
            "gradient_step": result.step, "memory": result.memory, "coefficients": coefficients(result.view),
            "models": ["(merge)", *zoo.experts], "tasks": list(zoo.experts), "spec": spec,
            **scored(scores, experts)}


def run_over_merge_rows(zoo: Zoo, over: OverMerge, names: list[str], test: Evaluator, experts: dict[str, Score],
                        report, steps: int | None = None) -> list[dict]:
    """The benchmark's rows OVER_MERGE_ROWS[name] for each name, all from one written merge of `over`; each row
    also carries the spec that writes the start (its first model)."""
    with tempfile.TemporaryDirectory(prefix="taskfuse-over-merge-") as work:
        report("learn", 0, 1, f"start: {over.method} {over.params}")
        start_spec, _ = write_start(zoo, over, Path(work) / "start")
        rows = []
        for name in names:
            method = learned_method(OVER_MERGE_ROWS[name], steps, OVER_MERGE_LR)
            label = f"{method.name} over {over.method}"
            rows.append({**over_merge_row(zoo, method, over, Path(work) / "start", test, experts,
                                          lambda done, total, loss: report("learn", done, total,
                                                                           f"{label} loss {loss:.4f}")),
                         "start_spec": start_spec})
    return rows
