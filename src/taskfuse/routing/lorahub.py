"""LoraHub (Huang et al. 2024, "LoraHub: Efficient Cross-Task Generalization via Dynamic LoRA Composition",
arXiv:2307.13269): one weight per adapter of a library, searched without gradients on a few examples of a new task,
minimising the examples' loss plus an L1 penalty on the weights; the result is one merged adapter.

The paper searches with nevergrad's default optimiser, 40 steps, weights in [-1.5, 1.5] starting from 0, penalty
0.05·Σ|w|. We search with CMA-ES from the `cma` package (the issue's choice for every gradient-free search here),
with the same budget, bounds, start and penalty."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoraHubSearch:
    budget: int = 40  # loss evaluations
    bound: float = 1.5
    l1: float = 0.05
    sigma: float = 0.5  # CMA-ES's initial step, a third of the bound
    seed: int = 0


@dataclass
class LoraHubResult:
    weights: list[float]
    objective: float  # loss + penalty at `weights`
    objective_at_start: float  # at w = 0: the base's loss
    evaluations: int
    history: list[float]  # best objective after each evaluation


def search_weights(loss: Callable[[list[float]], float], experts: int, how: LoraHubSearch) -> LoraHubResult:
    """Weights minimising loss(w) + l1·Σ|w| within ±bound, in at most `how.budget` evaluations of `loss`."""
    import cma

    options = {"bounds": [-how.bound, how.bound], "seed": how.seed + 1, "maxfevals": how.budget, "verbose": -9,
               "popsize": max(4, min(8, how.budget // 5))}
    state = np.random.get_state()  # cma draws from numpy's global generator: keep ours and theirs apart
    try:
        np.random.seed(how.seed)
        es = cma.CMAEvolutionStrategy([0.0] * experts, how.sigma, options)
        # the start (no adapter: the base) is scored first, so the result is never worse on the examples than it
        best, best_value, evaluations = [0.0] * experts, loss([0.0] * experts), 1
        history = [best_value]
        while not es.stop() and evaluations < how.budget:
            candidates = es.ask()[:how.budget - evaluations]
            values = []
            for x in candidates:
                weights = [float(v) for v in x]
                value = loss(weights) + how.l1 * sum(abs(w) for w in weights)
                values.append(value)
                evaluations += 1
                if value < best_value:
                    best, best_value = weights, value
                history.append(best_value)
            if len(candidates) < es.popsize:  # the budget ended mid-generation: CMA-ES takes whole ones only
                break
            es.tell(candidates, values)
    finally:
        np.random.set_state(state)
    return LoraHubResult(best, best_value, history[0], evaluations, history)
