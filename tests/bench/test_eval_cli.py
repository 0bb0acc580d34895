"""`taskfuse eval` on a merge of the tiny zoo, through the CLI."""
import json

import torch
from sklearn.metrics import accuracy_score, f1_score

from typer.testing import CliRunner

from taskfuse.bench.merging import merge_zoo
from taskfuse.cli.main import app
from taskfuse.eval.encoder import base_encoder_dir
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import VARIANTS


def independent_predictions(model_dir, head, texts) -> list[int]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_encoder_dir())
    model = AutoModel.from_pretrained(model_dir).eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
        return head(pooled).argmax(-1).tolist()


def test_eval_scores_a_merged_encoder_against_experts_and_zero_shot(tiny_bench, tmp_path, monkeypatch):
    _, _, _, cache = tiny_bench
    monkeypatch.setenv("TASKFUSE_CACHE", str(cache))
    zoo = build_zoo(VARIANTS["tiny"])
    merged = tmp_path / "merged"
    merge_zoo(zoo, "task_arithmetic", {"scale": 0.5}, merged)
    report_path = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(merged), "--variant", "tiny", "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert set(report["scores"]) == set(VARIANTS["tiny"].tasks)
    for task, score in report["scores"].items():
        expert = report["references"]["expert"][task]["accuracy"]
        assert abs(report["normalized"][task] - score["accuracy"] / expert) < 1e-9
        # scored again without taskfuse's harness: one padded batch through transformers, mean pooling, the
        # expert's head, scikit-learn's metrics
        texts, labels = zoo.tasks[task].splits["test"].texts, zoo.tasks[task].splits["test"].labels
        predicted = independent_predictions(merged, zoo.experts[task].head(), texts)
        assert abs(score["accuracy"] - accuracy_score(labels, predicted)) <= 1 / len(labels)  # one float-noise flip
        assert abs(score["macro_f1"] - f1_score(labels, predicted, average="macro")) <= 0.02
    assert "normalized" in result.output and report["seconds"] > 0
    assert report["spec"]["method"] == "task_arithmetic" and report["spec"]["params"] == {"scale": 0.5}


def test_eval_of_an_unknown_task_is_a_clear_error(tiny_bench, tmp_path, monkeypatch):
    _, _, _, cache = tiny_bench
    monkeypatch.setenv("TASKFUSE_CACHE", str(cache))
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--variant", "tiny", "--tasks", "wordnet_pos,nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_a_user_task_file_is_a_first_class_task(tiny_bench, tmp_path, monkeypatch):
    """A JSONL file of real text (WordNet glosses relabelled by part of speech) gets its own expert and scores."""
    from taskfuse.eval.tasks import load_task
    _, _, _, cache = tiny_bench
    monkeypatch.setenv("TASKFUSE_CACHE", str(cache))
    source = load_task("wordnet_pos", seed=3, sizes=VARIANTS["tiny"].sizes)
    rows = [{"text": t, "label": source.label_names[y]} for s in source.splits.values() for t, y in zip(s.texts, s.labels)]
    path = tmp_path / "my_pos.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    zoo = build_zoo(VARIANTS["tiny"], task_files=(str(path),))
    assert (zoo.experts["my_pos"].lora_dir / "adapter_config.json").exists()
    report_path = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(zoo.experts["my_pos"].model_dir), "--variant", "tiny",
                                      "--task-file", str(path), "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["normalized"]["my_pos"] == 1.0  # the expert judged against itself
