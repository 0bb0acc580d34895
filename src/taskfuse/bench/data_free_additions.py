"""Data-free methods registered after the committed full run (bench/grid.py lists them in EXCLUDED), scored as that
run scores its data-free rows: each grid point merged through the public API and scored on the validation split,
the best point (the first of equals) scored on the test split. Task arithmetic and Iso-CTS, at the parameters the
committed full run chose, are merged and scored again in the same run, so the new rows sit beside them."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score, mean, normalized
from ..zoo.build import Zoo, build_zoo
from ..zoo.recipe import variant_named
from .learned_over_merge import scored
from .merging import merge_zoo
from .references import reference_scores

# The paper's WUDI (Adam from Σ τ_t, 300 steps at lr 1e-5) takes no scale; it is searched here as every other
# method's λ is, and so is the exact minimiser of the same objective. MagMax's λ around the paper's 0.5
# (one task vector's size, not a sum's).
ADDED_GRIDS = {
    "wudi": [{"solver": "adam", "scale": s} for s in (0.8, 1.0, 1.2)]
            + [{"solver": "exact", "scale": s} for s in (0.6, 0.8, 1.0, 1.2, 1.5)],
    "magmax": [{"scale": s} for s in (0.3, 0.5, 0.7, 1.0, 1.5)],
}
ANCHORS = ("task_arithmetic", "iso_cts")


def data_free_additions(variant: str, work: Path, say: Callable[[str], None], committed: dict,
                        grids: dict[str, list[dict]] = ADDED_GRIDS) -> dict:
    """Each added method's grid on validation and its best point on test; the anchors at `committed`'s chosen
    parameters (a bench-full result.json) on test."""
    zoo = build_zoo(variant_named(variant))
    heads = {t: e.head() for t, e in zoo.experts.items()}
    validation, test = Evaluator(zoo.tasks, heads, "validation"), Evaluator(zoo.tasks, heads, "test")
    val_experts, test_experts = (reference_scores(zoo, e)["expert"] for e in (validation, test))
    rows = [_best_of_grid(zoo, method, grid, work, validation, test, val_experts, test_experts, say)
            for method, grid in grids.items()]
    chosen = {m["method"]: m for m in committed["methods"]}
    anchors = []
    for method in ANCHORS:
        merged, seconds = _merged(zoo, method, chosen[method]["params"], work / method)
        anchors.append({"method": method, "params": chosen[method]["params"], "merge_seconds": round(seconds, 2),
                        "committed_normalized": chosen[method]["average"]["normalized"],
                        **scored(test.score(load_encoder(merged)), test_experts)})
        say(f"{method} {chosen[method]['params']}: {100 * anchors[-1]['average']['normalized']:.2f} % on test")
    return {"variant": variant, "tasks": list(zoo.tasks), "rows": rows, "anchors": anchors,
            "committed": {"commit": (committed.get("code") or {}).get("commit")}}


def _merged(zoo: Zoo, method: str, params: dict, out: Path) -> tuple[Path, float]:
    started = time.perf_counter()
    merge_zoo(zoo, method, params, out, seed=zoo.variant.recipe.seed)
    return out, time.perf_counter() - started


def _best_of_grid(zoo: Zoo, method: str, grid: list[dict], work: Path, validation: Evaluator, test: Evaluator,
                  val_experts: dict[str, Score], test_experts: dict[str, Score], say: Callable[[str], None]) -> dict:
    """The grid scored on validation; the best point's folder is kept (merges are deterministic) and scored on
    test."""
    trials, best = [], work / f"{method}-best"
    for i, params in enumerate(grid):
        merged, seconds = _merged(zoo, method, params, work / f"{method}-{i}")
        on_validation = mean(normalized(validation.score(load_encoder(merged)), val_experts).values())
        trials.append({"params": params, "merge_seconds": round(seconds, 2), "validation_normalized": on_validation})
        say(f"{method} {params}: {100 * on_validation:.2f} % on validation, merged in {seconds:.1f} s")
        if on_validation > max((t["validation_normalized"] for t in trials[:-1]), default=-1.0):
            shutil.rmtree(best, ignore_errors=True)
            merged.rename(best)
        else:
            shutil.rmtree(merged)
    chosen = max(range(len(trials)), key=lambda i: (trials[i]["validation_normalized"], -i))
    row = {"method": method, "params": trials[chosen]["params"], "trials": trials,
           **scored(test.score(load_encoder(best)), test_experts)}
    say(f"{method} {row['params']}: {100 * row['average']['normalized']:.2f} % on test")
    return row
