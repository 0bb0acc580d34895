"""`taskfuse statistics --kind fisher` on real tiny sequence classifiers (BERT built from a transformers config, a
byte-level BPE trained on fortunes): the Fisher of each text's class, checked against per-example gradients taken
here, a fisher merge that reads it, and the labels a head does not know refused plainly."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification
from transformers import BertModel

from taskfuse.io.statistics_file import TENSORS
from taskfuse.testing.checkpoints import perturb
from taskfuse.testing.tiny_llm import byte_bpe_tokenizer, fortune_texts
from tests.cli.test_statistics_cli import merged_by_statistics
from tests.cli.test_user_errors import assert_user_error, taskfuse

CLASSES = {0: "one-liner", 1: "short", 2: "long"}


def _classifier(vocab: int, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=300, id2label=CLASSES,
                        label2id={n: i for i, n in CLASSES.items()}, architectures=["BertForSequenceClassification"])
    return perturb(BertForSequenceClassification(config), seed=seed, scale=0.1)


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier-stats")
    tok = byte_bpe_tokenizer()
    tunes = []
    for i in range(2):
        _classifier(len(tok), seed=i + 1).save_pretrained(root / f"ft{i}")
        tok.save_pretrained(root / f"ft{i}")
        tunes.append(root / f"ft{i}")
    texts = fortune_texts(60)[:24]
    data = root / "task.jsonl"
    data.write_text("".join(json.dumps({"text": t[:200], "label": CLASSES[min(len(t) // 80, 2)] if i % 2 else
                                        min(len(t) // 80, 2)}) + "\n" for i, t in enumerate(texts)))
    return tunes, data


def _empirical_fisher(folder, data) -> dict[str, torch.Tensor]:
    """Mean over the file's lines of the squared gradient of log p(label | text), one backward pass each."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    sums, lines = {}, [json.loads(line) for line in data.read_text().splitlines()]
    for line in lines:
        label = line["label"] if isinstance(line["label"], int) else model.config.label2id[line["label"]]
        model.zero_grad()
        encoded = tok(line["text"], return_tensors="pt")
        torch.log_softmax(model(**encoded).logits, -1)[0, label].backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                sums[name] = sums.get(name, 0) + p.grad ** 2
    return {name: s / len(lines) for name, s in sums.items()}


def test_a_classifiers_fisher_is_the_mean_squared_gradient_of_each_texts_class(tmp_path, classifiers):
    tunes, data = classifiers
    done = taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", data, "--no-normalize", "-o", tmp_path / "f")
    assert done.returncode == 0, done.stderr
    ours, expected = load_file(tmp_path / "f" / TENSORS), _empirical_fisher(tunes[0], data)
    assert "classifier.weight" in ours and "bert.encoder.layer.1.attention.self.query.weight" in ours
    for name in ("classifier.weight", "bert.encoder.layer.0.output.dense.weight", "bert.embeddings.word_embeddings.weight"):
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-4, atol=1e-10, msg=name)
    record = json.loads((tmp_path / "f" / "statistics.json").read_text())
    assert record["data"]["examples"] == 24 and record["data"]["labels"] is True


def test_a_fisher_merge_of_classifiers_reads_their_statistics(tmp_path, classifiers):
    tunes, data = classifiers
    folders = []
    for i, tune in enumerate(tunes):
        done = taskfuse("statistics", tune, "--kind", "fisher", "--data", data, "-o", tmp_path / f"s{i}",
                        *(["--fisher-labels", "expected"] if i else []))
        assert done.returncode == 0, done.stderr
        folders.append(tmp_path / f"s{i}")
    assert json.loads((folders[1] / "statistics.json").read_text())["fisher_labels"] == "expected"
    merged = merged_by_statistics(tmp_path, "fisher", tunes, folders, AutoModelForSequenceClassification,
                                  "bert.encoder.layer.0.output.dense.weight")
    assert merged.config.id2label == CLASSES


def test_labels_a_head_does_not_know_are_refused_and_the_models_own_need_none(tmp_path, classifiers):
    tunes, data = classifiers
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "a fortune", "label": "short"}) + "\n"
                   + json.dumps({"text": "another", "label": "medium"}) + "\n")
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", bad, "-o", tmp_path / "a"),
                      "bad.jsonl:2", "'medium'", "one-liner", "id2label")
    bad.write_text(json.dumps({"text": "a fortune", "label": 3}) + "\n")
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", bad, "-o", tmp_path / "a"),
                      "bad.jsonl:1", "label 3", "below 3")
    bad.write_text(json.dumps({"text": "a fortune", "label": 1}) + "\n{text: 'x'}\n")
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", bad, "-o", tmp_path / "a"),
                      "bad.jsonl:2", "not JSON")
    bad.write_text("\n")
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", bad, "-o", tmp_path / "a"),
                      "bad.jsonl", "no records")
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text(json.dumps({"text": "a fortune"}) + "\n")
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", unlabelled, "-o",
                               tmp_path / "a"), "unlabelled.jsonl:1", "label")
    assert not (tmp_path / "a").exists()
    done = taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", unlabelled, "--fisher-labels", "sampled",
                    "-o", tmp_path / "sampled")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "sampled" / "statistics.json").read_text())["data"]["labels"] is False
    headless = tmp_path / "headless"
    BertModel(BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, architectures=["BertModel"])).save_pretrained(headless)
    byte_bpe_tokenizer().save_pretrained(headless)
    assert_user_error(taskfuse("statistics", headless, "--kind", "fisher", "--data", data, "-o", tmp_path / "b"),
                      "BertModel", "neither a causal LM nor a sequence classifier", "--kind gram")
    assert not (tmp_path / "b").exists()


def test_a_two_class_head_saved_without_its_labels_reads_as_two_classes(tmp_path):
    """transformers 5 leaves id2label and num_labels out of config.json at their default (two classes)."""
    from taskfuse.programs.classifier_data import head_labels
    BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                             intermediate_size=16)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert head_labels(config) == ["LABEL_0", "LABEL_1"]
    assert head_labels({**config, "id2label": {"0": "no", "1": "yes", "2": "maybe"}}) == ["no", "yes", "maybe"]
