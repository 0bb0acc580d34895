"""The benchmark's tasks as a user's sequence classifiers: the classifiers are real BertForSequenceClassification
fine-tunes of the benchmark's base with their own heads, and the study script writes every row from what `taskfuse
merge` and `taskfuse learn --spec` write."""
import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open
from transformers import AutoConfig

from taskfuse.bench.classifier_zoo import build_classifier_zoo

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "classifier_learning.py"


def test_each_task_is_a_classifier_with_its_own_head_fine_tuned_from_the_base(tiny_zoo):
    classifiers = build_classifier_zoo(tiny_zoo)
    assert list(classifiers.classifiers) == list(tiny_zoo.tasks)
    assert AutoConfig.from_pretrained(classifiers.base).architectures == ["BertForPreTraining"]
    with safe_open(classifiers.base / "model.safetensors", "pt") as base:
        pooler = base.get_tensor("bert.pooler.dense.weight")  # the sentence encoder's pooler, kept
        for task, folder in classifiers.classifiers.items():
            config = AutoConfig.from_pretrained(folder)
            assert config.architectures == ["BertForSequenceClassification"]
            assert list(config.id2label.values()) == list(tiny_zoo.tasks[task].label_names)
            with safe_open(folder / "model.safetensors", "pt") as tune:
                assert tune.get_tensor("classifier.weight").shape[0] == len(tiny_zoo.tasks[task].label_names)
                assert not tune.get_tensor("bert.pooler.dense.weight").equal(pooler)  # fine-tuned, from it
    assert build_classifier_zoo(tiny_zoo) == classifiers  # cached: found again, not trained again


def test_the_study_writes_every_row_from_the_merges_and_learned_folders(tiny_bench, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--variant", "tiny", "--steps", "1", "--out",
                           str(tmp_path / "study")], env={**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3])},
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "study" / "result.json").read_text())
    assert [r["method"] for r in result["rows"]] == ["task_arithmetic", "ties", "iso_cts", "adamerging_task",
                                                     "adamerging_layer", "atlas", "atlas over iso_cts"]
    for row in result["rows"]:
        assert set(row["accuracy"]) == set(result["tasks"]) and 0 < row["average"]["normalized"] < 3
    learned = {r["method"]: r for r in result["rows"] if r["kind"] == "learned"}
    assert [d["labels"] for d in learned["adamerging_layer"]["data_seen"]] == [False, False]
    assert [d["labels"] for d in learned["atlas"]["data_seen"]] == [True, True]
    assert all(len(r["losses"]) == 1 for r in learned.values())
    assert "| atlas over iso_cts | learned |" in (tmp_path / "study" / "results.md").read_text()
