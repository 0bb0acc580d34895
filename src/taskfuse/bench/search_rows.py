"""Search rows of the benchmark: CMA-ES (and random search, its baseline) over per-expert weights of a merge.

Each row is what `taskfuse search` does, with a budget that fits the benchmark: points of the search space
(bench/search_zoo.py) merged through the engine and scored on the labelled validation split, on the same trial
pool as the data-free grid; the best point is merged again and judged on test. Scores of the validation split are
the only data a search reads, and the row records that.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import api
from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score, as_dict, mean, normalized
from ..programs.search import SearchConfig, search
from ..programs.trial_pool import TrialPool, threads_per_worker
from ..zoo.build import Zoo
from .memory import RssPeak
from .search_zoo import score_trial, search_space, trial_spec


@dataclass(frozen=True)
class SearchRow:
    name: str
    algorithm: str  # cma | random
    method: str  # the merge whose per-expert weights (and λ, density where it has them) are searched
    budget: int = 24  # scored points: three CMA-ES generations of 8
    popsize: int = 8
    paper: str = ""


SEARCH_ROWS = {r.name: r for r in (
    SearchRow("search_cma", "cma", "task_arithmetic",
              paper="Hansen 2016, The CMA Evolution Strategy: A Tutorial, arXiv:1604.00772 (the `cma` package)"),
    SearchRow("search_random", "random", "task_arithmetic", paper="uniform random search (the baseline)"),
)}


def run_search_row(zoo: Zoo, row: SearchRow, test: Evaluator, test_experts: dict[str, Score], report,
                   trials: TrialPool, task_files: tuple[str, ...]) -> dict:
    """Search on validation, merge the best point, score it on test."""
    seed = zoo.variant.recipe.seed
    threads = None if trials.kind == "in-process" else threads_per_worker(trials.workers)
    config = SearchConfig(row.algorithm, row.budget, row.popsize, seed=seed)
    space = search_space(zoo, row.method)
    with tempfile.TemporaryDirectory(prefix=f"taskfuse-bench-{row.name}-") as work, RssPeak() as memory:
        started = time.perf_counter()
        found = search(space, lambda points: trials.map(score_trial, [
            (zoo.variant.name, task_files, row.method, p, seed, threads) for p in points]), config,
            Path(work) / "search.jsonl", {"method": row.method, "variant": zoo.variant.name},
            lambda done, total, best: report("learn", done, total, f"{row.name} best {best * 100:.2f}%"))
        seconds = time.perf_counter() - started
        report("test", 0, 1, row.name)
        spec = trial_spec(zoo, row.method, found.best, seed)
        api.merge(spec, Path(work) / "best")
        scores = test.score(load_encoder(Path(work) / "best"))
    norm = normalized(scores, test_experts)
    return {"method": row.name, "kind": "learned",
            "params": {"search": f"{row.algorithm} over {row.method}'s per-expert weights", "budget": row.budget,
                       "data": "labelled validation (scores only)"},
            "learning": {"paper": row.paper, "search": asdict(config), "space": [asdict(d) for d in space]},
            "data_seen": {"split": "validation", "labels": True, "examples": {t: len(task.splits["validation"])
                                                                               for t, task in zoo.tasks.items()},
                          "per_class": None},
            "spec": spec, "trials": [{"params": t["params"], "validation_normalized": t["score"]}
                                     for t in found.trials],
            "tasks": list(zoo.experts), "seconds": {"search": round(seconds, 1)},
            "memory": {"rss_added_mib": round(memory.added / (1 << 20))},
            "test": as_dict(scores), "test_normalized": norm,
            "average": {"accuracy": mean(s.accuracy for s in scores.values()),
                        "macro_f1": mean(s.macro_f1 for s in scores.values()), "normalized": mean(norm.values())}}
