"""Tail averaging on the tiny zoo's real experts: the study's last iterate is the over-merge row's own, its average
the mean the loop's iterates give, the training split choosing between them; `taskfuse learn --average-tail` writes
and records the average."""
import json
import os
import subprocess
from dataclasses import replace

import pytest

from taskfuse.bench.learned import learned_method
from taskfuse.bench.learned_over_merge import OverMerge, over_merge_row, write_start
from taskfuse.bench.tail_averaged_over_merge import SPLITS, seed_row, summary
from taskfuse.eval.harness import Evaluator
from tests.cli.test_user_errors import SCRIPT


def test_one_run_gives_the_over_merge_rows_last_iterate_and_an_average_beside_it(tiny_zoo, tmp_path):
    over = OverMerge("task_arithmetic", {"scale": 0.5})
    write_start(tiny_zoo, over, tmp_path / "start")
    splits = {s: Evaluator(tiny_zoo.tasks, {t: e.head() for t, e in tiny_zoo.experts.items()}, s) for s in SPLITS}
    experts = {s: {t: ev.score_task(e.model_dir, t) for t, e in tiny_zoo.experts.items()} for s, ev in splits.items()}
    # batches smaller than the tiny zoo's validation splits and a large rate, so that the iterates move apart
    method = replace(learned_method("atlas", steps=4, lr=0.5), batch_size=4)
    row = seed_row(tiny_zoo, method, tmp_path / "start", splits, experts, None)
    plain = over_merge_row(tiny_zoo, method, over, tmp_path / "start", splits["test"], experts["test"])
    assert row["losses"] == plain["losses"] and row["last"]["test"]["average"] == plain["average"]
    assert row["tail"] == {"fraction": 0.5, "steps_averaged": 2, "from_step": 3, "of_steps": 4}
    assert set(row["averaged"]) == set(SPLITS) and row["seed"] == tiny_zoo.variant.recipe.seed
    start = {s: {"average": {"normalized": 0.5}} for s in SPLITS}
    made = summary([row, row], start)
    gain = row["averaged"]["test"]["average"]["normalized"] - row["last"]["test"]["average"]["normalized"]
    assert made["test"]["gain_of_averaging"]["mean"] == pytest.approx(gain)
    assert made["test"]["threshold"] == pytest.approx(0.52) and made["validation"]["averaged"]["n"] == 2
    # the training split judges: the iterate it prefers is the one whose test score counts seed by seed
    prefers = row["averaged"]["train"]["average"]["normalized"] > row["last"]["train"]["average"]["normalized"]
    assert row["judge_prefers_average"] is prefers and made["judge"]["prefers_average"] is prefers
    assert made["judge"]["seeds_preferring_average"] == 2 * prefers
    chosen = row["averaged" if prefers else "last"]["test"]["average"]["normalized"]
    assert made["judge"]["chosen_per_seed_on_test"]["mean"] == pytest.approx(chosen)


def test_learn_writes_the_mean_of_the_last_steps_and_records_it(tiny_bench, tmp_path):
    run = lambda *args: subprocess.run([SCRIPT, "learn", *args], capture_output=True, text=True,  # noqa: E731
                                       env={**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3])},
                                       stdin=subprocess.DEVNULL)
    common = ["atlas", "--variant", "tiny", "--steps", "4", "--lr", "0.5"]
    done = run(*common, "-o", str(tmp_path / "last"))
    averaged = run(*common, "--average-tail", "0.5", "-o", str(tmp_path / "averaged"))
    assert done.returncode == 0 and averaged.returncode == 0, done.stderr + averaged.stderr
    last, mean = (json.loads((tmp_path / name / "taskfuse_learned.json").read_text()) for name in ("last", "averaged"))
    assert "tail_average" not in last and mean["tail_average"]["steps_averaged"] == 2
    assert mean["losses"] == last["losses"]  # the same loop; only what is written differs
    assert mean["coefficients"] != last["coefficients"]
    assert "the mean over the last 2 steps" in averaged.stderr
    for bad, said in ((["--average-tail", "0"], "--average-tail 0.0: give the fraction"),
                      (["--average-tail", "0.5", "--spec", str(tmp_path / "x.yaml")], "not yet offered with --spec")):
        refused = run(*common, *bad, "-o", str(tmp_path / "x"))
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr
        assert not (tmp_path / "x").exists()

