"""Whether to average the coefficients of aTLAS learned from Iso-CTS (the benchmark's best learned row) over the last
half of its steps, chosen by cross-validation on the validation split, the only labelled data the row may learn from.

The tail-averaged study (tail_averaged_over_merge.py) measured the average beside the last iterate but could not
choose between them without test: validation rejects the average because the coefficients are fitted to it, and the
training split, which the experts fitted, rewards staying close to each expert. Here each task's validation split is
cut into FOLDS class-stratified folds; for each fold the coefficients learn from the other folds (same start, steps,
rate, batches and learning seed as bench-full's row), and the run's tail average and its last iterate are both
written through the engine and scored on the fold it did not learn from. Pooled over the folds, every validation
example is scored once by a run that never saw it; the pooled normalised score chooses. Each fold's run is also
scored on test, for the record only: the choice never reads it.

The choice is of a procedure, so it applies to the run that learns from the whole of validation: the tail-averaged
study's averaged rows are that procedure's test scores (bench/targets.py joins the two results).
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score, mean
from ..eval.tasks.data import Split
from ..programs.tail_average import tail_averaged
from ..zoo.build import Zoo, build_zoo
from ..zoo.recipe import variant_named
from .learned import LearnedMethod, learned_method
from .learned_over_merge import OVER_MERGE_LR, OverMerge, learn_over_merge, scored, write_start
from .seed_spread import spread
from .tail_averaged_over_merge import FRACTION, written_and_scored

FOLDS = 4  # each run learns from three quarters of validation; the only number of folds tried
HELD_OUT = "held_out"  # the split name a fold's zoo gives the validation rows it does not learn from
KINDS = ("averaged", "last")


def folds_of(labels: tuple[int, ...], folds: int) -> list[int]:
    """Each row's fold: the rows ordered by class (each class in the split's order, shuffled when the split was cut)
    and dealt round-robin, so every fold keeps the split's class balance and their sizes differ by one at most."""
    which = [0] * len(labels)
    for position, row in enumerate(sorted(range(len(labels)), key=lambda r: labels[r])):  # sorted() is stable
        which[row] = position % folds
    return which


def _rows(split: Split, rows: list[int]) -> Split:
    return Split(tuple(split.texts[r] for r in rows), tuple(split.labels[r] for r in rows))


def fold_zoo(zoo: Zoo, fold: int, folds: int = FOLDS) -> Zoo:
    """The same zoo whose tasks' validation split is every fold but `fold` (what learning reads) and whose HELD_OUT
    split is that fold; train and test are unchanged."""
    tasks = {}
    for name, task in zoo.tasks.items():
        validation = task.splits["validation"]
        which = folds_of(validation.labels, folds)
        held = [r for r, f in enumerate(which) if f == fold]
        if not held or len(held) == len(which):
            raise UsageError(f"task {name!r}: its validation split ({len(which)} examples) cannot be cut into {folds} "
                             "folds with examples on both sides. Fix: use fewer folds or a larger validation split.")
        kept = [r for r, f in enumerate(which) if f != fold]
        tasks[name] = replace(task, splits={**task.splits, "validation": _rows(validation, kept),
                                            HELD_OUT: _rows(validation, held)})
    return replace(zoo, tasks=tasks)


def fold_row(zoo: Zoo, method: LearnedMethod, start: Path, fold: int, test: Evaluator,
             test_experts: dict[str, Score], progress: Callable[[int, int, float], None] | None) -> dict:
    """One fold: the coefficients learned from the other folds, their tail average and their last iterate each
    written and scored on the held-out fold and on test; the experts' scores on the held-out fold beside them."""
    folded = fold_zoo(zoo, fold)
    held = Evaluator(folded.tasks, {t: e.head() for t, e in zoo.experts.items()}, HELD_OUT)
    experts = {HELD_OUT: {t: held.score_task(e.model_dir, t) for t, e in zoo.experts.items()}, "test": test_experts}
    splits = {HELD_OUT: held, "test": test}
    with tail_averaged(method.recipe.steps, FRACTION) as average:
        result = learn_over_merge(folded, method, start, average.progress(progress))
    averaged = written_and_scored(folded, result.view, start, splits, experts)
    average.restore_last()
    last = written_and_scored(folded, result.view, start, splits, experts)
    return {"fold": fold, "learned_from": method.data_seen(folded)["examples"],
            "experts_held_out": {t: asdict(s) for t, s in experts[HELD_OUT].items()},
            "averaged": averaged, "last": last, "tail": average.describe(),
            "seconds": {"learn": round(result.seconds, 1)}, "losses": [round(x, 5) for x in result.losses]}


def pooled(rows: list[dict], kind: str) -> dict:
    """`kind`'s accuracy per task over all held-out folds (each validation example scored once, by the run that did
    not learn from it), normalised by the experts' accuracy over the same examples; and their average."""
    def accuracy(records: list[dict]) -> float:
        return sum(r["accuracy"] * r["examples"] for r in records) / sum(r["examples"] for r in records)

    tasks = rows[0]["experts_held_out"]
    per_task = {t: accuracy([r[kind][HELD_OUT]["test"][t] for r in rows])
                / accuracy([r["experts_held_out"][t] for r in rows]) for t in tasks}
    return {"normalized": per_task, "average": mean(per_task.values())}


def summary(rows: list[dict]) -> dict:
    """The choice (the pooled held-out score's: the average where it is higher, else the last iterate), how each
    fold alone would choose, and, for the record, the folds' test scores of both."""
    pools = {kind: pooled(rows, kind) for kind in KINDS}
    gain = pools["averaged"]["average"] - pools["last"]["average"]
    per_fold = [r["averaged"][HELD_OUT]["average"]["normalized"] - r["last"][HELD_OUT]["average"]["normalized"]
                for r in rows]
    test = {kind: [r[kind]["test"]["average"]["normalized"] for r in rows] for kind in KINDS}
    return {"pooled": pools, "gain_of_averaging": gain, "prefers_average": gain > 0,
            "per_fold_gain": spread(per_fold), "folds_preferring_average": sum(g > 0 for g in per_fold),
            "test": {**{kind: spread(values) for kind, values in test.items()},
                     "gain_of_averaging": spread([a - b for a, b in zip(test["averaged"], test["last"])])}}


def tail_average_cross_validated(variant: str, work: Path, say: Callable[[str], None], steps: int | None,
                                 committed: dict) -> dict:
    """The study's part of result.json: aTLAS over Iso-CTS at bench-full's parameters (`committed`), FOLDS runs."""
    zoo = build_zoo(variant_named(variant))
    test = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "test")
    test_experts = {t: test.score_task(e.model_dir, t) for t, e in zoo.experts.items()}
    over = OverMerge("iso_cts", {m["method"]: m for m in committed["methods"]}["iso_cts"]["params"])
    method = learned_method("atlas", steps, OVER_MERGE_LR)
    start_spec, _ = write_start(zoo, over, work / "start")
    start = scored(test.score(load_encoder(work / "start")), test_experts)
    say(f"{method.name} from {over.method} {over.params}: {100 * start['average']['normalized']:.2f} % normalised "
        f"on test at the start; {FOLDS} folds of validation")
    rows = []
    for fold in range(FOLDS):
        begun = time.perf_counter()
        row = fold_row(zoo, method, work / "start", fold, test, test_experts,
                       lambda done, total, loss, f=fold: say(f"  fold {f} step {done}/{total} loss {loss:.4f}")
                       if done % 20 == 0 else None)
        said = {kind: f"{100 * row[kind][HELD_OUT]['average']['normalized']:.2f} / "
                      f"{100 * row[kind]['test']['average']['normalized']:.2f}" for kind in KINDS}
        say(f"  fold {fold}: averaged {said['averaged']} %, last {said['last']} % on held-out fold / test "
            f"({time.perf_counter() - begun:.0f} s)")
        rows.append(row)
    return {"variant": variant, "method": f"{method.name} over {over.method}", "over": over.method,
            "over_params": over.params, "steps": method.recipe.steps, "lr": method.recipe.lr,
            "seed": zoo.variant.recipe.seed, "fraction": FRACTION, "folds": FOLDS, "start_spec": start_spec,
            "start": start, "rows": rows, "summary": summary(rows), "tasks": list(zoo.experts)}
