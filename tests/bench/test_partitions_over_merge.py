"""aTLAS×K from a data-free merge: step 0 is the merge, the written row is the view's, and the study script writes
one row per K and refuses what it cannot learn before building anything."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from taskfuse.bench.learned import learned_method
from taskfuse.bench.learned_over_merge import OverMerge, write_start
from taskfuse.bench.partition_row import with_partitions
from taskfuse.bench.partitions_over_merge import learn_partitions_over_merge, partitions_over_merge_row
from taskfuse.bench.references import reference_scores
from taskfuse.eval.harness import Evaluator
from taskfuse.io.checkpoint import Checkpoint

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "partitions_over_merge.py"


def test_partitions_start_at_the_merge_and_the_row_scores_what_they_learned(tiny_zoo, tmp_path):
    over = OverMerge("task_arithmetic", {"scale": 0.5})
    write_start(tiny_zoo, over, tmp_path / "start")
    still = learn_partitions_over_merge(tiny_zoo, with_partitions(learned_method("atlas", steps=1, lr=1e-12), 3),
                                        tmp_path / "start")
    with torch.no_grad():
        merged = still.view.merged_parameters()
    start = Checkpoint.open(tmp_path / "start")
    for name in still.view.names:  # the merge's vector at 1 in every partition, the experts' at 0: the start
        torch.testing.assert_close(merged[name], start.read(name), rtol=0, atol=1e-6)
    test = Evaluator(tiny_zoo.tasks, {t: e.head() for t, e in tiny_zoo.experts.items()}, "test")
    experts = reference_scores(tiny_zoo, test)["expert"]
    method = with_partitions(learned_method("atlas", steps=2, lr=0.05), 2)
    row = partitions_over_merge_row(tiny_zoo, method, over, tmp_path / "start", test, experts)
    assert row["method"] == "atlas×2 over task_arithmetic" and row["partitions"] == 2
    assert row["coefficient_count"] == (1 + len(tiny_zoo.experts)) * len(row["coefficients"]) * 2
    assert row["learning"]["parameterization"] == {"kind": "partition", "partitions": 2, "seed": 0}
    assert len(row["losses"]) == 2 and 0 < row["average"]["normalized"] < 1.5


def test_the_script_writes_one_row_per_k_and_refuses_what_it_cannot_learn(tiny_bench, tmp_path):
    env = {**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3])}
    common = [sys.executable, str(SCRIPT), "--variant", "tiny", "--steps", "2"]
    done = subprocess.run([*common, "--partitions", "2", "3", "--out", str(tmp_path / "parts")], env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "parts" / "result.json").read_text())
    assert [r["partitions"] for r in result["rows"]] == [2, 3] and result["per_tensor"] is None
    assert result["threshold"] == result["over"]["average"]["normalized"] + 0.02
    assert "atlas×3 over iso_cts" in (tmp_path / "parts" / "results.md").read_text()
    for args, message in ((["--partitions", "1"], "give distinct K from 2 to 255"),
                          (["--method", "adamerging_layer_ties"], "cannot learn per partition")):
        refused = subprocess.run([*common, *args, "--out", str(tmp_path / "no")], capture_output=True, text=True,
                                 timeout=300, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "TASKFUSE_CACHE": str(tmp_path / "cache")})
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr[-2000:]
        assert not (tmp_path / "no").exists() and not (tmp_path / "cache").exists()


def test_the_committed_study_starts_where_bench_full_does():
    """The committed rows start from bench-full's Iso-CTS merge (its chosen scale, its test score) and compare with
    its per-tensor row and the seed study's average, which they quote as committed."""
    result = json.loads((BENCHMARKS / "results" / "partitions-over-merge" / "result.json").read_text())
    full = json.loads((BENCHMARKS / "results" / "bench-full" / "result.json").read_text())
    [iso] = [m for m in full["methods"] if m["method"] == "iso_cts"]
    assert result["over"]["params"] == iso["params"]
    assert result["over"]["average"]["normalized"] == iso["average"]["normalized"]
    [row] = [r for r in full["learned"] if r["method"] == "atlas over iso_cts"]
    spread = json.loads((BENCHMARKS / "results" / "learning-seed-spread" / "result.json").read_text())
    assert result["per_tensor"] == {"bench_full": row["average"]["normalized"],
                                    "seed_mean": spread["summary"]["normalized"]["mean"],
                                    "seed_std": spread["summary"]["normalized"]["std"]}
