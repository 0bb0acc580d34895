"""The benchmark's experts as a user's embedding models: the study script learns over them with exactly what
`taskfuse learn --spec` runs and writes every row from the folders it writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "embedding_learning.py"


def test_the_study_scores_every_row_from_what_taskfuse_merge_and_learn_write(tiny_bench, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--variant", "tiny", "--steps", "2", "--out",
                           str(tmp_path / "study")], env={**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3])},
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "study" / "result.json").read_text())
    assert [r["method"] for r in result["rows"]] == ["task_arithmetic", "iso_cts", "atlas", "atlas_fewshot",
                                                     "self_positioning", "atlas over iso_cts"]
    for row in result["rows"]:
        assert set(row["test"]) == set(result["tasks"]) and 0 < row["average"]["normalized"] < 3
        assert row["zoo_row_normalized"] is None  # the committed rows are the full zoo's, not the tiny one's
    learned = {r["method"]: r for r in result["rows"] if r["kind"] == "learned"}
    assert all(len(r["losses"]) == 2 for r in learned.values())
    assert all(d["kind"] == "labels" and d["labels"] and d["max_tokens"] == 48
               for d in learned["atlas"]["data_seen"])
    assert all(d["per_class"] == 16 for d in learned["atlas_fewshot"]["data_seen"])  # the tiny zoo has fewer
    # the learned folder replays: the row's learning started from the Iso-CTS merge, its first model
    assert learned["atlas over iso_cts"]["learning"]["recipe"]["objective"] == "cross_entropy"
    assert "| self_positioning | learned |" in (tmp_path / "study" / "results.md").read_text()
