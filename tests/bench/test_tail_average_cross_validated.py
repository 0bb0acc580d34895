"""Cross-validating the choice to tail-average: the folds cut each task's validation split into disjoint,
class-balanced parts; each run learns from the others only, and the pooled held-out scores choose."""
from collections import Counter
from dataclasses import replace

import pytest

from taskfuse.bench.learned import learned_method
from taskfuse.bench.learned_over_merge import OverMerge, write_start
from taskfuse.bench.tail_average_cross_validated import (FOLDS, HELD_OUT, fold_row, fold_zoo, folds_of, pooled,
                                                         summary)
from taskfuse.errors import UsageError
from taskfuse.eval.harness import Evaluator


def test_folds_are_class_balanced_and_near_equal():
    labels = (0, 1, 0, 0, 2, 1, 0, 1, 2, 0, 0)
    which = folds_of(labels, 3)
    sizes = Counter(which)
    assert set(sizes) == {0, 1, 2} and max(sizes.values()) - min(sizes.values()) <= 1
    for label in set(labels):
        per_fold = Counter(f for f, y in zip(which, labels) if y == label)
        assert max(per_fold.values()) - min(per_fold.get(f, 0) for f in range(3)) <= 1


def test_a_fold_zoo_learns_from_the_other_folds_and_holds_out_its_own(tiny_zoo):
    for name, task in tiny_zoo.tasks.items():
        validation = task.splits["validation"]
        seen = []
        for fold in range(FOLDS):
            split = fold_zoo(tiny_zoo, fold).tasks[name].splits
            learned, held = split["validation"], split[HELD_OUT]
            assert len(learned) + len(held) == len(validation) and len(held) > 0
            assert Counter(zip(learned.texts, learned.labels)) + Counter(zip(held.texts, held.labels)) \
                == Counter(zip(validation.texts, validation.labels))
            assert split["test"] is task.splits["test"]
            seen += list(zip(held.texts, held.labels))
        assert Counter(seen) == Counter(zip(validation.texts, validation.labels))  # each example held out once
    with pytest.raises(UsageError, match="cannot be cut into 40 folds"):
        fold_zoo(tiny_zoo, 39, 40)  # a fold past the smallest split's size holds out nothing


def test_a_fold_run_is_scored_on_what_it_did_not_learn_from_and_the_pool_chooses(tiny_zoo, tmp_path):
    write_start(tiny_zoo, OverMerge("task_arithmetic", {"scale": 0.5}), tmp_path / "start")
    test = Evaluator(tiny_zoo.tasks, {t: e.head() for t, e in tiny_zoo.experts.items()}, "test")
    experts = {t: test.score_task(e.model_dir, t) for t, e in tiny_zoo.experts.items()}
    method = replace(learned_method("atlas", steps=4, lr=0.5), batch_size=4)
    rows = [fold_row(tiny_zoo, method, tmp_path / "start", fold, test, experts, None) for fold in (0, 1)]
    for row in rows:
        folded = fold_zoo(tiny_zoo, row["fold"])
        assert row["learned_from"] == {t: len(task.splits["validation"]) for t, task in folded.tasks.items()}
        held = {t: len(task.splits[HELD_OUT]) for t, task in folded.tasks.items()}
        assert {t: s["examples"] for t, s in row["averaged"][HELD_OUT]["test"].items()} == held
        assert row["tail"]["steps_averaged"] == 2 and len(row["losses"]) == 4
    pool = pooled(rows, "last")
    for t, value in pool["normalized"].items():
        right = sum(r["last"][HELD_OUT]["test"][t]["accuracy"] * r["last"][HELD_OUT]["test"][t]["examples"]
                    for r in rows)
        expert = sum(r["experts_held_out"][t]["accuracy"] * r["experts_held_out"][t]["examples"] for r in rows)
        assert value == pytest.approx(right / expert)
    made = summary(rows)
    gain = made["pooled"]["averaged"]["average"] - made["pooled"]["last"]["average"]
    assert made["gain_of_averaging"] == pytest.approx(gain) and made["prefers_average"] is (gain > 0)
    assert made["test"]["averaged"]["n"] == 2 and made["per_fold_gain"]["n"] == 2
