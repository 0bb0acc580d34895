"""`taskfuse eval`: judge any encoder directory on the zoo's tasks with the experts' heads."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import yaml

from .. import __version__
from ..errors import TaskDataError
from ..eval.harness import Evaluator, as_dict, mean, normalized
from ..eval.tasks import SPLITS
from ..zoo.build import ZooProgress, build_zoo
from ..zoo.recipe import ZooVariant, variant_named
from .references import reference_scores


def evaluate_model(model: str | Path, tasks: tuple[str, ...] | None = None, variant: str = "full",
                   split: str = "test", task_files: tuple[str, ...] = (),
                   zoo_progress: ZooProgress | None = None) -> dict:
    """Per-task accuracy and macro-F1 of `model`, normalised by each task's expert, beside zero-shot and experts."""
    started = time.perf_counter()
    chosen = variant_named(variant)
    if split not in SPLITS:  # checked now, not after minutes of building the zoo
        raise TaskDataError(f"unknown split {split!r}. Fix: use one of {', '.join(SPLITS)} (test is the default; "
                            "validation is what the benchmark tunes on).")
    if tasks:
        unknown = sorted(set(tasks) - set(chosen.tasks))
        if unknown:
            raise TaskDataError(f"task(s) {unknown} are not in the {variant!r} zoo ({list(chosen.tasks)}); "
                                "pass a task file with --task-file for your own task")
        chosen = ZooVariant(chosen.name, tuple(tasks), chosen.sizes, chosen.recipe)
    zoo = build_zoo(chosen, 1, zoo_progress, task_files)
    evaluator = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, split)
    scores = evaluator.score(Path(model))
    refs = reference_scores(zoo, evaluator)
    norm = normalized(scores, refs["expert"])
    spec_file = Path(model) / "taskfuse_spec.yaml"  # written beside every taskfuse merge
    spec = yaml.safe_load(spec_file.read_text()) if spec_file.exists() else None
    return {"model": str(model), "spec": spec, "split": split, "taskfuse": __version__, "variant": variant,
            "seed": zoo.variant.recipe.seed, "scores": as_dict(scores), "normalized": norm,
            "average": {"accuracy": mean(s.accuracy for s in scores.values()), "normalized": mean(norm.values())},
            "references": {k: as_dict(v) for k, v in refs.items()},
            "data_used": f"{split} split of each task (labels only for scoring)",
            "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
