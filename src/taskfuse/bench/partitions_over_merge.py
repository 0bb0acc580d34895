"""aTLAS×K started from a data-free merge: the over-merge rows (bench/learned_over_merge.py) with each tensor's
coefficients split over K seeded random partitions.

One scalar per tensor and task (the over-merge rows) moves a whole tensor of a task at once; with K partitions the
learning can take more of a task vector in some entries of a tensor and less in others, at K times the
coefficients (aTLAS×K, Zhang et al. 2024). The row is written by the partitioned_task_arithmetic spec
(programs/partition_spec.py) over [the start merge, the experts] and scored on test from the written folder.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .. import api
from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score
from ..programs.learn import LearnProgress
from ..programs.learning_loop import DEFAULT_STEP
from ..programs.lazy_task_vectors import FileTaskVector
from ..programs.merge_view import MergeView
from ..programs.partition_spec import partition_spec
from ..programs.spec_learning import view_over_merge
from ..zoo.build import Zoo
from .learned import LearnedMethod, LearnedResult, describe
from .learned_over_merge import OverMerge, scored
from .learned_row import TENSOR_RULES, summary
from .partition_row import learned_coefficients
from .view_learning import learn_built_view


def learn_partitions_over_merge(zoo: Zoo, method: LearnedMethod, start: Path,
                                progress: LearnProgress | None = None, step: str = DEFAULT_STEP) -> LearnedResult:
    """Learn per partition from the merge written at `start`: the view's first task vector is the merge's (every
    partition at 1), the others the experts' (at 0), as learned_over_merge.learn_over_merge does per tensor."""
    def build() -> MergeView:
        base = load_encoder(zoo.base_dir)
        theta0 = base.state_dict()
        return view_over_merge(base, FileTaskVector(start, theta0),
                               [FileTaskVector(e.model_dir, theta0) for e in zoo.experts.values()],
                               method.parameterization)
    return learn_built_view(zoo, method, build, progress, step)


def partitions_over_merge_row(zoo: Zoo, method: LearnedMethod, over: OverMerge, start: Path, test: Evaluator,
                              experts: dict[str, Score], progress: LearnProgress | None = None) -> dict:
    """`method` (partitioned) learned from the merge at `start`, written through the engine and scored on test."""
    result = learn_partitions_over_merge(zoo, method, start, progress)
    models = [str(start)] + [str(e.model_dir) for e in zoo.experts.values()]
    spec = partition_spec(result.view, str(zoo.base_dir), models, seed=zoo.variant.recipe.seed, dtype="float32",
                          tensor_rules=TENSOR_RULES)
    with tempfile.TemporaryDirectory(prefix=f"taskfuse-partitions-{method.name}-") as work:
        begun = time.perf_counter()
        api.merge(spec, Path(work) / "merged", threads=None)
        merge_seconds = time.perf_counter() - begun
        scores = test.score(load_encoder(Path(work) / "merged"))
    k = method.parameterization.partitions
    return {"method": f"{method.name}×{k} over {over.method}", "kind": "learned", "partitions": k,
            "learning": {**describe(method), "over": over.method, "over_params": over.params},
            "params": {**summary(method), "partitions": k, "start": f"{over.method} {over.params}"},
            "data_seen": method.data_seen(zoo), "losses": [round(x, 5) for x in result.losses],
            "seconds": {"learn": round(result.seconds, 1), "merge": round(merge_seconds, 1)},
            "gradient_step": result.step, "memory": result.memory,
            "coefficients": learned_coefficients(result.view)["coefficients"],
            "coefficient_count": result.view.coefficients.numel(),
            "models": ["(merge)", *zoo.experts], "tasks": list(zoo.experts), **scored(scores, experts)}
