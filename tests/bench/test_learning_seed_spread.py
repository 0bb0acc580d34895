"""The learning-seed study: one learned row per seed from the same start, the zoo's seed changed for the learning
only; the seed the benchmark's rows use gives their row exactly, another seed another batch order."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from taskfuse.bench.learned import learned_method
from taskfuse.bench.learned_over_merge import OverMerge, over_merge_row, write_start
from taskfuse.bench.references import reference_scores
from taskfuse.bench.seed_spread import seed_rows, spread, summarised, with_learning_seed
from taskfuse.eval.harness import Evaluator

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_seed_spread.py"


def test_the_zoos_own_seed_gives_the_benchmarks_row_and_another_seed_another_order(tiny_zoo, tmp_path):
    changed = with_learning_seed(tiny_zoo, 7)
    assert changed.variant.recipe.seed == 7 and changed.experts == tiny_zoo.experts
    assert changed.base_dir == tiny_zoo.base_dir and tiny_zoo.variant.recipe.seed != 7
    over = OverMerge("task_arithmetic", {"scale": 0.5})
    write_start(tiny_zoo, over, tmp_path / "start")
    test = Evaluator(tiny_zoo.tasks, {t: e.head() for t, e in tiny_zoo.experts.items()}, "test")
    experts = reference_scores(tiny_zoo, test)["expert"]
    # batches smaller than the tiny zoo's validation splits, so that their order can differ
    method = replace(learned_method("atlas", steps=3, lr=0.05), batch_size=4)
    own = tiny_zoo.variant.recipe.seed
    rows = seed_rows(tiny_zoo, method, over, tmp_path / "start", test, experts, [own, own + 1])
    benchmark_row = over_merge_row(tiny_zoo, method, over, tmp_path / "start", test, experts)
    assert rows[0]["losses"] == benchmark_row["losses"] and rows[0]["average"] == benchmark_row["average"]
    assert rows[1]["losses"] != rows[0]["losses"]  # the batches came in another order
    summary = summarised(rows, 0.5, 0.02)
    averages = [r["average"]["normalized"] for r in rows]
    assert summary["normalized"]["mean"] == pytest.approx(sum(averages) / 2)
    assert summary["seeds_reaching"] == sum(a >= 0.52 for a in averages)


def test_spread_of_one_value_has_no_deviation():
    assert spread([0.9]) == {"n": 1, "mean": 0.9, "std": 0.0, "min": 0.9, "max": 0.9}
    assert spread([1.0, 3.0])["std"] == pytest.approx(2 ** 0.5)


def test_the_script_writes_one_row_per_seed_and_refuses_repeated_seeds(tiny_bench, tmp_path):
    env = {**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3])}
    common = [sys.executable, str(SCRIPT), "--variant", "tiny", "--steps", "2"]
    done = subprocess.run([*common, "--seeds", "0", "1", "--out", str(tmp_path / "spread")], env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "spread" / "result.json").read_text())
    assert [r["seed"] for r in result["rows"]] == [0, 1] and result["bench_full"] is None
    assert result["summary"]["normalized"]["n"] == 2 and result["method"] == "atlas over iso_cts"
    assert "seed 1" in (tmp_path / "spread" / "results.md").read_text()
    again = subprocess.run([*common, "--seeds", "1", "1", "--out", str(tmp_path / "again")], env=env,
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert again.returncode == 2 and "repeats a seed" in again.stderr and not (tmp_path / "again").exists()


def test_the_committed_study_reproduces_bench_fulls_row_with_its_seed():
    """Seed 0 is the benchmark's own learning seed: the committed study's row for it is bench-full's committed row,
    and its summary is the one its rows give."""
    result = json.loads((SCRIPT.parents[0] / "results" / "learning-seed-spread" / "result.json").read_text())
    [own] = [r for r in result["rows"] if r["seed"] == 0]
    assert result["bench_full"] is not None and own["average"]["normalized"] == result["bench_full"]["normalized"]
    assert result["summary"] == summarised(result["rows"], result["over"]["average"]["normalized"], 0.02)
