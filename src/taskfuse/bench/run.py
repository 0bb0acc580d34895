"""`taskfuse bench`: zoo → every data-free method tuned on validation → judged on test → report."""
from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score, as_dict, mean, normalized
from ..zoo.build import Zoo, ZooProgress, build_zoo
from ..zoo.recipe import variant_named
from .learned import LEARNED, learned_method
from .learned_over_merge import OVER_MERGE_ROWS, OverMerge, run_over_merge_rows, scored
from .learned_row import run_learned
from .grid import EXCLUDED, benchmarked_methods, configs
from .merging import merge_zoo
from .search_zoo import grid_trial
from ..programs.trial_pool import InProcessTrialPool, TrialPool, threads_per_worker
from .provenance import code_commit, command_line, machine
from .references import reference_scores
from .search_rows import SEARCH_ROWS, run_search_row
from .statistics_rows import STATISTICS_ROWS, run_statistics_row
from .similarity import task_vector_cosines

# (stage, done, total, what): stages "zoo", "references", "search", "learn", "test".
BenchProgress = Callable[[str, int, int, str], None]
DATA_USED = {"merge": "none (data-free rows); learned rows: the validation data each row names",
             "selection": "labelled validation split (data-free rows' hyperparameters only)",
             "reported": "test split, never used for selection or learning"}


def run_bench(variant: str = "full", workers: int = 1, task_files: tuple[str, ...] = (),
              progress: BenchProgress | None = None, zoo_progress: ZooProgress | None = None,
              learned: tuple[str, ...] = (*LEARNED, *STATISTICS_ROWS, *SEARCH_ROWS, *OVER_MERGE_ROWS),
              trials: TrialPool | None = None) -> dict:
    """Run the benchmark and return everything the report shows, as plain JSON-ready data. The data-free grid's
    trials run on `trials` (a process pool or Ray; default: one after another in this process)."""
    started = time.perf_counter()
    code = code_commit()  # now: the code that runs, not whatever the checkout holds when the run ends
    report = progress or (lambda *a: None)
    zoo = build_zoo(variant_named(variant), workers, zoo_progress, task_files)
    zoo_seconds = time.perf_counter() - started
    heads = {t: e.head() for t, e in zoo.experts.items()}
    validation = Evaluator(zoo.tasks, heads, "validation")
    test = Evaluator(zoo.tasks, heads, "test")
    report("references", 0, 2, "zero-shot, experts, LoRA experts")
    val_refs = reference_scores(zoo, validation)
    report("references", 1, 2, "test split")
    test_refs = reference_scores(zoo, test)
    report("references", 2, 2, "")
    trials = trials or InProcessTrialPool()
    methods = _run_methods(zoo, benchmarked_methods(), variant != "full", validation, test, val_refs["expert"],
                           test_refs["expert"], report, trials, task_files)
    learned_rows = [run_statistics_row(zoo, STATISTICS_ROWS[name], test, test_refs["expert"], report, validation,
                                       val_refs["expert"])
                    if name in STATISTICS_ROWS else
                    run_search_row(zoo, SEARCH_ROWS[name], test, test_refs["expert"], report, trials, task_files)
                    if name in SEARCH_ROWS else
                    run_learned(zoo, learned_method(name, zoo.variant.learn_steps), test, test_refs["expert"], report)
                    for name in learned if name not in OVER_MERGE_ROWS]
    over_rows = [name for name in learned if name in OVER_MERGE_ROWS]
    if over_rows:  # from the data-free row that scored best on validation, merged once for all of them
        best = max(methods, key=lambda m: max(t["validation_normalized"] for t in m["trials"]))
        learned_rows += run_over_merge_rows(zoo, OverMerge(best["method"], best["params"]), over_rows, test,
                                            test_refs["expert"], report, zoo.variant.learn_steps)
    return {
        "taskfuse": __version__, "variant": variant, "seed": zoo.variant.recipe.seed,
        "recipe": zoo.variant.recipe.as_dict(), "data_used": DATA_USED,
        "command": command_line(), "code": code, "machine": machine(),
        "grid_trials": {"pool": trials.kind, "workers": trials.workers}, "seconds": {"zoo": round(zoo_seconds, 1),
                                           "total": round(time.perf_counter() - started, 1)},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "tasks": [_task_row(zoo, name) for name in zoo.tasks],
        "task_vector_cosine": task_vector_cosines(zoo.base_dir, [e.model_dir for e in zoo.experts.values()]),
        "references": {split: {k: as_dict(v) for k, v in refs.items()}
                       for split, refs in (("validation", val_refs), ("test", test_refs))},
        "methods": methods, "learned": learned_rows, "excluded": EXCLUDED,
    }


def _run_methods(zoo: Zoo, names: list[str], quick: bool, validation: Evaluator, test: Evaluator,
                 val_experts: dict[str, Score], test_experts: dict[str, Score], report: BenchProgress,
                 trials: TrialPool, task_files: tuple[str, ...]) -> list[dict]:
    """Every method's grid scored on validation (on the trial pool, all methods' points at once so no worker
    waits for a method to finish), then each method's best point merged again here and judged on test."""
    points = [(method, params) for method in names for params in configs(method, quick)]
    threads = None if trials.kind == "in-process" else threads_per_worker(trials.workers)
    items = [(zoo.variant.name, task_files, method, params, zoo.variant.recipe.seed, threads)
             for method, params in points]
    outcomes: dict[str, list[dict]] = {method: [] for method in names}
    for i, ((method, params), outcome) in enumerate(zip(points, trials.imap(grid_trial, items))):
        report("search", i + 1, len(points), f"{method} {params}")
        scores = {t: Score(**score) for t, score in outcome["scores"].items()}
        outcomes[method].append({"params": params, "merge_seconds": round(outcome["merge_seconds"], 2),
                                 "validation_normalized": mean(normalized(scores, val_experts).values()),
                                 "validation_accuracy": {t: s.accuracy for t, s in scores.items()}})
    return [_judge_best(zoo, method, outcomes[method], test, test_experts, report) for method in names]


def _judge_best(zoo: Zoo, method: str, trials: list[dict], test: Evaluator, test_experts: dict[str, Score],
                report: BenchProgress) -> dict:
    """The method's best validation point (the first of equals), merged again (merges are deterministic) and
    scored on test."""
    best = max(range(len(trials)), key=lambda i: (trials[i]["validation_normalized"], -i))
    report("test", 0, 1, f"{method} {trials[best]['params']}")
    with tempfile.TemporaryDirectory(prefix=f"taskfuse-bench-{method}-") as work:
        spec, _ = merge_zoo(zoo, method, trials[best]["params"], Path(work) / "best", seed=zoo.variant.recipe.seed)
        scores = test.score(load_encoder(Path(work) / "best"))
    return {"method": method, "params": trials[best]["params"], "spec": spec, "trials": trials,
            **scored(scores, test_experts)}


def _task_row(zoo: Zoo, name: str) -> dict:
    task = zoo.tasks[name]
    return {"name": name, "description": task.description, "kind": task.kind,
            "sources": [asdict(s) for s in task.sources], "classes": task.class_counts(),
            "sizes": {s: len(split) for s, split in task.splits.items()},
            "fingerprint": task.fingerprint(), "frozen_at": task.frozen_at,
            "expert_seconds": zoo.experts[name].info["seconds"]}
