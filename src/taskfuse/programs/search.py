"""Black-box search over merge parameters: CMA-ES (the `cma` package) or uniform random search as its baseline.

The search only proposes points and reads scores; trials (merge + evaluate) run wherever `evaluate` sends them
(a local process pool or Ray, see programs/trial_pool.py). Every scored trial is appended to a JSONL log before the
next generation is asked for, so a killed search resumes: the same seeded optimiser asks the same points again,
and points already in the log are answered from it instead of being merged and scored a second time.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError

# (points done, budget, best score so far)
SearchProgress = Callable[[int, int, float], None]
Evaluate = Callable[[list[dict]], list[float]]  # a generation of parameter sets -> their scores (higher is better)


@dataclass(frozen=True)
class Dimension:
    name: str  # "weight:<i>" for model i's weight, or a method parameter such as "scale" or "density"
    low: float
    high: float


@dataclass(frozen=True)
class SearchConfig:
    algorithm: str = "cma"  # or "random"
    budget: int = 40  # scored points in all
    popsize: int = 8  # points per generation (evaluated in parallel)
    sigma: float = 0.25  # CMA-ES's initial step, as a fraction of each dimension's range
    seed: int = 0

    def __post_init__(self):
        if self.algorithm not in ("cma", "random"):
            raise UsageError(f"unknown search algorithm {self.algorithm!r}: use cma or random")
        if self.budget < 1 or self.popsize < 2:
            raise UsageError("the search needs a budget of at least 1 point and generations of at least 2")


@dataclass
class SearchResult:
    best: dict
    best_score: float
    trials: list[dict]  # {"params", "score"} in the order they were asked
    evaluated: int  # how many of them this run merged and scored (the rest came from the log)


def search(space: list[Dimension], evaluate: Evaluate, config: SearchConfig, log: Path,
           identity: dict, progress: SearchProgress | None = None) -> SearchResult:
    """Maximise `evaluate` over the box `space`; `identity` (what is searched, on what) must match a resumed log."""
    known = _read_log(log, {"space": [asdict(d) for d in space], "config": asdict(config), **identity})
    asker = _CmaAsker(space, config) if config.algorithm == "cma" else _RandomAsker(space, config)
    trials: list[dict] = []
    evaluated = 0
    while len(trials) < config.budget:
        points = asker.ask()[:config.budget - len(trials)]
        params = [_params(space, x) for x in points]
        missing = [i for i, p in enumerate(params) if _key(p) not in known]
        if missing:
            scores = evaluate([params[i] for i in missing])
            evaluated += len(missing)
            with log.open("a") as f:
                for i, score in zip(missing, scores):
                    known[_key(params[i])] = score
                    f.write(json.dumps({"params": params[i], "score": score}) + "\n")
        results = [known[_key(p)] for p in params]
        asker.tell(points, results)
        trials += [{"params": p, "score": s} for p, s in zip(params, results)]
        if progress:
            progress(len(trials), config.budget, max(t["score"] for t in trials))
    best = max(trials, key=lambda t: t["score"])  # first of equal bests: the earliest asked
    return SearchResult(best["params"], best["score"], trials, evaluated)


def _params(space: list[Dimension], x: list[float]) -> dict:
    # rounded so that a resumed optimiser's points match the log's exactly (12 digits are far below any effect)
    return {d.name: round(min(max(float(v), d.low), d.high), 12) for d, v in zip(space, x)}


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def _read_log(log: Path, header: dict) -> dict[str, float]:
    """Scores already in the log; a new log starts with the header that a resumed search must match."""
    if not log.exists() or log.stat().st_size == 0:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps({"header": header}) + "\n")
        return {}
    lines = log.read_text().splitlines()
    first = json.loads(lines[0]) if lines else {}
    if first.get("header") != header:
        raise UsageError(f"the search log {log} belongs to a different search (method, space, data or settings "
                         "differ). Fix: delete it to start afresh, or pass another --log.")
    known = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill: that point is scored again
            continue
        known[_key(entry["params"])] = entry["score"]
    return known


class _CmaAsker:
    """CMA-ES in [0, 1]^d (each dimension scaled to its range), seeded: the same tells give the same asks."""

    def __init__(self, space: list[Dimension], config: SearchConfig):
        import cma
        import numpy as np

        self.space, self.np = space, np
        saved = np.random.get_state()
        self.es = cma.CMAEvolutionStrategy([0.5] * len(space), config.sigma, {
            "bounds": [0.0, 1.0], "popsize": config.popsize, "seed": config.seed + 1,  # cma reads seed 0 as "random"
            "verbose": -9})
        self._state = np.random.get_state()  # cma draws from numpy's global generator: keep ours apart from it
        np.random.set_state(saved)

    def ask(self) -> list[list[float]]:
        saved = self.np.random.get_state()
        self.np.random.set_state(self._state)
        self._unit = self.es.ask()
        self._state = self.np.random.get_state()
        self.np.random.set_state(saved)
        return [[d.low + u * (d.high - d.low) for d, u in zip(self.space, x)] for x in self._unit]

    def tell(self, points: list[list[float]], scores: list[float]) -> None:
        if len(scores) == len(self._unit):  # a last, partial generation is scored but not told
            self.es.tell(self._unit, [-s for s in scores])  # cma minimises


class _RandomAsker:
    def __init__(self, space: list[Dimension], config: SearchConfig):
        self.space, self.popsize, self.rng = space, config.popsize, random.Random(config.seed)

    def ask(self) -> list[list[float]]:
        return [[self.rng.uniform(d.low, d.high) for d in self.space] for _ in range(self.popsize)]

    def tell(self, points, scores) -> None:
        pass
