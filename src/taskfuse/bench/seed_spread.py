"""How far a learned row's test score moves with the learning seed alone: the same experts, the same start, the same
data and steps, only the order the validation batches come in (the seed the rows take from the zoo's recipe, which
the zoo's own training also used; here it changes for the learning only, the experts stay the cached ones).

Issue 12 judges the best learned row against the best data-free row + 2 points from one run; a verdict within a few
hundredths of a point means little without the spread one run cannot show. The data-free start has no seed (its
merge is deterministic), so the spread of the difference is the learned row's own.
"""
from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..eval.harness import Evaluator, Score
from ..zoo.build import Zoo
from .learned import LearnedMethod
from .learned_over_merge import OverMerge, over_merge_row


def with_learning_seed(zoo: Zoo, seed: int) -> Zoo:
    """The same zoo (experts, data, cached folders) whose recipe seed, which the learning reads, is `seed`."""
    return replace(zoo, variant=replace(zoo.variant, recipe=replace(zoo.variant.recipe, seed=seed)))


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation, lowest and highest of a row's averages over seeds."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


def seed_rows(zoo: Zoo, method: LearnedMethod, over: OverMerge, start: Path, test: Evaluator,
              experts: dict[str, Score], seeds: list[int],
              progress: Callable[[int, int, int, float], None] | None = None) -> list[dict]:
    """`method` learned from the merge at `start` once per learning seed, each written and scored on test as the
    benchmark's over-merge rows are; per seed its test scores, losses and time (not its coefficients)."""
    rows = []
    for seed in seeds:
        report = (lambda done, total, loss, s=seed: progress(s, done, total, loss)) if progress else None
        row = over_merge_row(with_learning_seed(zoo, seed), method, over, start, test, experts, report)
        rows.append({"seed": seed, **{k: row[k] for k in ("average", "test_normalized", "test", "losses", "seconds",
                                                          "gradient_step", "data_seen", "learning", "params")}})
    return rows


def summarised(rows: list[dict], start_normalized: float, margin: float) -> dict:
    """The spread of the rows' normalised averages, of their gain over the start, and how many seeds reach the
    start + `margin` (issue 12's best learned row ≥ best data-free row + 2 points, margin 0.02)."""
    averages = [r["average"]["normalized"] for r in rows]
    return {"normalized": spread(averages), "gain_over_start": spread([a - start_normalized for a in averages]),
            "threshold": start_normalized + margin, "seeds_reaching": sum(a >= start_normalized + margin
                                                                          for a in averages)}
