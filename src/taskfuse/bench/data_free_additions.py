"""Data-free methods registered after the committed full run (bench/grid.py lists them in EXCLUDED), scored as that
run scores its data-free rows: each grid point merged through the public API and scored on the validation split,
the best point (the first of equals) scored on the test split. Two sections:

- full experts: the new methods over the zoo's full fine-tunes; task arithmetic and Iso-CTS at the parameters the
  committed full run chose are merged and scored again in the same run, so the new rows sit beside them;
- LoRA experts: the new methods and four of the full run's (task arithmetic, TIES, TSV-M, Iso-CTS) over the zoo's
  PEFT adapters, each a model of the spec (its update B·A · scaling), where KnOTS is meant to help.

Scores are normalised by the full experts' accuracy in both sections."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .. import api
from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score, mean, normalized
from ..zoo.build import Zoo, build_zoo
from ..zoo.recipe import variant_named
from .grid import GRIDS
from .learned_over_merge import scored
from .merging import zoo_spec
from .references import reference_scores

# SCE averages the agreeing task vectors, as TIES does, so its λ is searched over TIES's; the variance selection
# either only weighs the models (the authors' code) or also drops the unselected entries (mergekit's sce).
_TIES_SCALES = sorted({point["scale"] for point in GRIDS["ties"]})
_SCE_SELECTIONS = ({"select_topk": 1.0}, {"select_topk": 0.1}, {"select_topk": 0.1, "selection": "task_vectors"})
# RAM keeps an entry's change where one model alone made it and averages it elsewhere; which entries count as
# changed is ε. The full experts' |τ| has a median of about 4e-4, so ε = 1e-5 leaves nearly every entry changed by
# all eight models (RAM is then their mean), and 1e-3 leaves about a third changed by one model only; the LoRA
# updates' median is about 1e-3. No λ: the method has none (r = 0.1 is mergekit's RAM+ strength).
_ram_grid = lambda epsilons: [{"epsilon": e, "r": r} for e in epsilons for r in (0.0, 0.1)]  # noqa: E731
# The spherical means take no parameter that changes the merge of equally weighted models.
_SPHERICAL = [{}]

# The paper's WUDI (Adam from Σ τ_t, 300 steps at lr 1e-5) takes no scale; it is searched here as every other
# method's λ is, and so is the exact minimiser of the same objective (still rising at 1.2, the edge of the first run's
# 0.4-1.2). MagMax's λ around the paper's 0.5 (one task vector's size, not a sum's); KnOTS-TIES around TIES's best
# points on the full run (density 0.2-0.4), λ from below 1.0 (the first run's lowest point, where it peaked).
ADDED_GRIDS = {
    "wudi": [{"solver": "adam", "scale": s} for s in (0.8, 1.0, 1.2)]
            + [{"solver": "exact", "scale": s} for s in (1.0, 1.2, 1.5, 2.0, 2.5)],
    "magmax": [{"scale": s} for s in (0.5, 0.7, 1.0)],
    "knots": [{"density": d, "scale": s} for d in (0.2, 0.4) for s in (0.6, 0.8, 1.0, 1.5)],
    "sce": [{**selection, "scale": s} for selection in _SCE_SELECTIONS for s in _TIES_SCALES],
    "ram": _ram_grid((1e-5, 3e-4, 1e-3, 2e-3)),
    "multislerp": _SPHERICAL,
    "multislerp_task_vectors": _SPHERICAL,
}
# Over the LoRA experts, four of the full run's methods beside the new ones, on grids sized for the adapters: the
# first run took the full run's grids, and TIES, TSV-M, Iso-CTS, WUDI, MagMax and KnOTS all chose their lowest λ there
# (task arithmetic peaked inside its grid, kept here).
LORA_GRIDS = {
    "task_arithmetic": GRIDS["task_arithmetic"],
    "ties": [{"density": d, "scale": s} for d in (0.1, 0.2, 0.3, 0.4) for s in (0.3, 0.45, 0.6, 0.8)],
    "tsv": [{"scale": s} for s in (0.2, 0.3, 0.4, 0.5, 0.7)],
    "iso_cts": [{"scale": s} for s in (0.4, 0.6, 0.8, 1.0, 1.25)],
    "wudi": [{"solver": "adam", "scale": s} for s in (0.2, 0.4, 0.6)]
            + [{"solver": "exact", "scale": s} for s in (0.1, 0.2, 0.3, 0.4, 0.5)],
    "magmax": [{"scale": s} for s in (0.2, 0.3, 0.4, 0.5)],
    "knots": [{"density": d, "scale": s} for d in (0.2, 0.4) for s in (0.4, 0.6, 0.8, 1.0)],
    "sce": [{**selection, "scale": s} for selection in _SCE_SELECTIONS for s in (0.6, 0.8, 1.0, 1.5)],
    "ram": _ram_grid((1e-5, 1e-3, 2e-3, 4e-3)),
    "multislerp_task_vectors": _SPHERICAL,
}
ANCHORS = ("task_arithmetic", "iso_cts")
SpecOf = Callable[[str, dict], dict]


def data_free_additions(variant: str, work: Path, say: Callable[[str], None], committed: dict,
                        grids: dict[str, list[dict]] = ADDED_GRIDS,
                        lora_grids: dict[str, list[dict]] = LORA_GRIDS) -> dict:
    """Each section's grids on validation and their best points on test; the anchors at `committed`'s chosen
    parameters (a bench-full result.json) on test."""
    zoo = build_zoo(variant_named(variant))
    heads = {t: e.head() for t, e in zoo.experts.items()}
    validation, test = Evaluator(zoo.tasks, heads, "validation"), Evaluator(zoo.tasks, heads, "test")
    experts = {split: reference_scores(zoo, e)["expert"] for split, e in (("validation", validation), ("test", test))}

    def best(section: str, spec_of: SpecOf, method: str, grid: list[dict]) -> dict:
        (work / section).mkdir(exist_ok=True)
        return _best_of_grid(spec_of, method, grid, work / section, validation, test, experts, say)

    full = lambda method, params: zoo_spec(zoo, method, params, zoo.variant.recipe.seed)  # noqa: E731
    lora = lambda method, params: lora_spec(zoo, method, params)  # noqa: E731
    rows = [best("full", full, method, grid) for method, grid in grids.items()]
    lora_rows = [best("lora", lora, method, grid) for method, grid in lora_grids.items()]
    chosen = {m["method"]: m for m in committed["methods"]}
    anchors = []
    for method in ANCHORS:
        merged, seconds = _merged(full(method, chosen[method]["params"]), work / f"anchor-{method}")
        anchors.append({"method": method, "params": chosen[method]["params"], "merge_seconds": round(seconds, 2),
                        "committed_normalized": chosen[method]["average"]["normalized"],
                        **scored(test.score(load_encoder(merged)), experts["test"])})
        say(f"{method} {chosen[method]['params']}: {100 * anchors[-1]['average']['normalized']:.2f} % on test")
    return {"variant": variant, "tasks": list(zoo.tasks), "rows": rows, "anchors": anchors, "lora_rows": lora_rows,
            "committed": {"commit": (committed.get("code") or {}).get("commit")}}


def lora_spec(zoo: Zoo, method: str, params: dict) -> dict:
    """The zoo's LoRA adapters merged over the base encoder (a delta-space method: each adapter's update)."""
    return {**zoo_spec(zoo, method, params, zoo.variant.recipe.seed),
            "models": [{"path": str(e.lora_dir)} for e in zoo.experts.values()]}


def _merged(spec: dict, out: Path) -> tuple[Path, float]:
    started = time.perf_counter()
    api.merge(spec, out, threads=None)
    return out, time.perf_counter() - started


def _best_of_grid(spec_of: SpecOf, method: str, grid: list[dict], work: Path, validation: Evaluator,
                  test: Evaluator, experts: dict[str, dict[str, Score]], say: Callable[[str], None]) -> dict:
    """The grid scored on validation; the best point's folder is kept (merges are deterministic) and scored on
    test."""
    trials, best, chosen = [], work / f"{method}-best", 0
    for i, params in enumerate(grid):
        merged, seconds = _merged(spec_of(method, params), work / f"{method}-{i}")
        on_validation = mean(normalized(validation.score(load_encoder(merged)), experts["validation"]).values())
        trials.append({"params": params, "merge_seconds": round(seconds, 2), "validation_normalized": on_validation})
        say(f"{work.name} {method} {params}: {100 * on_validation:.2f} % on validation, merged in {seconds:.1f} s")
        if i == 0 or on_validation > trials[chosen]["validation_normalized"]:  # the first of equals is kept
            chosen = i
            shutil.rmtree(best, ignore_errors=True)
            merged.rename(best)
        else:
            shutil.rmtree(merged)
    row = {"method": method, "params": trials[chosen]["params"], "trials": trials,
           **scored(test.score(load_encoder(best)), experts["test"])}
    say(f"{work.name} {method} {row['params']}: {100 * row['average']['normalized']:.2f} % on test")
    return row
