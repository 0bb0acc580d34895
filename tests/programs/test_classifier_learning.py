"""`taskfuse learn --spec` over sequence classifiers: real tiny BERT classifiers (built from a transformers config,
fine-tuned here on two of the benchmark's real Debian-text tasks with different label sets), their base saved as
a masked LM (as bert-base-uncased is), so the body is merged and each task keeps its own head and pooler."""
import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from taskfuse.eval.encoder import base_encoder_dir, load_tokenizer
from taskfuse.eval.tasks import load_task
from taskfuse.programs.classifier_heads import task_classifier
from taskfuse.zoo.recipe import VARIANTS
from tests.cli.test_user_errors import assert_user_error, taskfuse

TASKS = ("wordnet_pos", "fortune_language")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _save_tokenizer(folder):
    for name in TOKENIZER_FILES:
        if (base_encoder_dir() / name).exists():
            shutil.copy(base_encoder_dir() / name, folder / name)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """The base (a BertForMaskedLM: `bert.` names, no pooler), two classifiers fine-tuned from it (2 and 3+
    classes), each task's validation texts as JSONL with class names."""
    root = tmp_path_factory.mktemp("classifiers")
    tokenizer = save_tiny_base(BertForMaskedLM, root / "base")
    data = []
    for i, name in enumerate(TASKS):
        task = load_task(name, 0, VARIANTS["tiny"].sizes)
        names = dict(enumerate(task.label_names))
        torch.manual_seed(i)
        tune = BertForSequenceClassification.from_pretrained(root / "base", num_labels=len(names), id2label=names,
                                                             label2id={n: k for k, n in names.items()})
        fine_tune(tune, task, tokenizer)
        tune.save_pretrained(root / f"ft_{name}")
        _save_tokenizer(root / f"ft_{name}")
        data.append(write_validation(task, root / f"{name}.jsonl", lambda y: names[y]))
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(root / "base"),
                                    "models": [{"path": str(root / f"ft_{n}")} for n in TASKS]}))
    return root, spec, data


def save_tiny_base(model_class, folder):
    """A tiny BERT (the benchmark's tokenizer, 2 layers of 32) of `model_class` saved with its tokenizer in
    `folder`; returns the tokenizer."""
    tokenizer = load_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    _save_tokenizer(folder)
    return tokenizer


def write_validation(task, path, label):
    """The task's first 40 validation texts (200 characters at most) as {"text", "label": label(class index)}."""
    split = task.splits["validation"]
    path.write_text("".join(json.dumps({"text": t[:200], "label": label(int(y))}) + "\n"
                            for t, y in list(zip(split.texts, split.labels))[:40]))
    return path


def fine_tune(model, task, tokenizer, steps=40):
    """`steps` AdamW steps of 8 training texts on the task's labels (every parameter that requires a gradient)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    train = task.splits["train"]
    for step in range(steps):
        rows = [(step * 8 + j) % len(train.texts) for j in range(8)]
        batch = tokenizer([train.texts[r] for r in rows], padding=True, truncation=True, max_length=48,
                          return_tensors="pt")
        model(**batch, labels=torch.tensor([int(train.labels[r]) for r in rows])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _logits(model, texts):
    tokenizer = load_tokenizer()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _texts(path, n=12):
    return [json.loads(line)["text"] for line in path.read_text().splitlines()[:n]]


def test_a_task_wise_merge_serves_each_task_with_the_merged_body_and_its_own_head(family, tmp_path):
    root, spec, data = family
    out = tmp_path / "learned"
    done = taskfuse("learn", "adamerging_task", "--spec", str(spec), "--data", str(data[0]), "--data", str(data[1]),
                    "--steps", "3", "-o", str(out))
    assert done.returncode == 0, done.stderr
    replay = yaml.safe_load((out / "taskfuse_spec.yaml").read_text())
    weights = [m["weight"] for m in replay["models"]]
    assert replay["tensor_rules"]["missing"] == "copy_base" and replay["tensor_rules"]["extra"] == "drop"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    # the reference, computed here: each classifier with its body's tensors at θ₀ + Σ_t w_t (θ_t − θ₀)
    base = BertForMaskedLM.from_pretrained(root / "base").state_dict()
    tunes = [BertForSequenceClassification.from_pretrained(root / f"ft_{n}").eval() for n in TASKS]
    states = [t.state_dict() for t in tunes]
    merged = {k: v + sum(w * (s[k] - v) for w, s in zip(weights, states)) for k, v in base.items()
              if k.startswith("bert.") and v.is_floating_point()}
    for i, tune in enumerate(tunes):
        reference = BertForSequenceClassification.from_pretrained(root / f"ft_{TASKS[i]}").eval()
        reference.load_state_dict({**states[i], **merged})  # the pooler, absent from the base, stays its own
        served = task_classifier(out, i)
        texts = _texts(data[i])
        assert torch.allclose(_logits(served, texts), _logits(reference, texts), atol=1e-5)
        assert not torch.allclose(_logits(served, texts), _logits(tune, texts), atol=1e-3)  # the body did merge
    assert set(load_file(out / "heads" / "0" / "head.safetensors")) == {
        "bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("method", ["atlas", "atlas_fewshot", "adamerging_layer"])
def test_learned_classifier_merges_replay_bit_for_bit_and_learn(family, tmp_path, method):
    root, spec, data = family
    out = tmp_path / "learned"
    done = taskfuse("learn", method, "--spec", str(spec), "--data", str(data[0]), "--data", str(data[1]),
                    "--steps", "12", "-o", str(out))
    assert done.returncode == 0, done.stderr
    learned = json.loads((out / "taskfuse_learned.json").read_text())
    losses = learned["losses"]
    assert losses[-1] < losses[0], losses
    if method == "atlas_fewshot":  # 16 per class at most
        assert all(d["examples"] < 40 for d in learned["data_seen"]), learned["data_seen"]
    assert learned["heads"] == {str(root / f"ft_{n}"): f"heads/{i}" for i, n in enumerate(TASKS)}
    again = taskfuse("merge", str(out / "taskfuse_spec.yaml"), "-o", str(tmp_path / "replayed"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "replayed" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_a_base_without_the_classifiers_body_prefix_is_refused_before_anything_is_written(family, tmp_path):
    root, spec, data = family
    bare = tmp_path / "bare"
    BertModel(BertConfig.from_pretrained(root / "base")).save_pretrained(bare)  # names without `bert.`
    _save_tokenizer(bare)
    other = tmp_path / "spec.yaml"
    other.write_text(spec.read_text().replace(str(root / "base"), str(bare)))
    out = tmp_path / "out"
    done = taskfuse("learn", "atlas", "--spec", str(other), "--data", str(data[0]), "--data", str(data[1]),
                    "--steps", "2", "-o", str(out))
    assert_user_error(done, "IncompatibleInputsError", "bert.", "AutoModelForMaskedLM")
    assert not out.exists()


def test_a_label_the_head_does_not_know_is_refused_with_its_line(family, tmp_path):
    root, spec, data = family
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(data[1].read_text() + json.dumps({"text": "a text", "label": "no such class"}) + "\n")
    done = taskfuse("learn", "atlas", "--spec", str(spec), "--data", str(data[0]), "--data", str(wrong),
                    "--steps", "2", "-o", str(tmp_path / "out"))
    lines = len(data[1].read_text().splitlines()) + 1
    text = assert_user_error(done, "TaskDataError", f"{wrong}:{lines}", "no such class", "'english'")
    assert "Loading weights" not in text  # refused before any model is loaded
    assert not (tmp_path / "out").exists()


def _write_unlabelled(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_entropy_learns_from_unlabelled_text_and_cross_entropy_asks_for_labels(family, tmp_path):
    root, spec, data = family
    plain = [_write_unlabelled(tmp_path / f"{i}.jsonl", _texts(d, 30)) for i, d in enumerate(data)]
    done = taskfuse("learn", "adamerging_layer", "--spec", str(spec), "--data", str(plain[0]), "--data",
                    str(plain[1]), "--steps", "4", "--step", "merged-once", "--max-tokens", "16", "-o",
                    str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    seen = json.loads((tmp_path / "out" / "taskfuse_learned.json").read_text())["data_seen"]
    assert [d["labels"] for d in seen] == [False, False] and [d["max_tokens"] for d in seen] == [16, 16]
    assert [d["examples"] for d in seen] == [len(p.read_text().splitlines()) for p in plain]
    refused = taskfuse("learn", "atlas", "--spec", str(spec), "--data", str(plain[0]), "--data", str(plain[1]),
                       "--steps", "2", "-o", str(tmp_path / "atlas"))
    assert_user_error(refused, "TaskDataError", f"{plain[0]}:1", '"label"')
    assert not (tmp_path / "atlas").exists()


@pytest.mark.parametrize("options", [["--partitions", "4"], ["--sparsify", "dare_linear", "--sparsify-param",
                                                                "density=0.5"]])
def test_partitioned_and_sparsified_classifier_merges_replay_bit_for_bit(family, tmp_path, options):
    root, spec, data = family
    out = tmp_path / "learned"
    done = taskfuse("learn", "atlas", "--spec", str(spec), "--data", str(data[0]), "--data", str(data[1]),
                    "--steps", "4", *options, "-o", str(out))
    assert done.returncode == 0, done.stderr
    replay = yaml.safe_load((out / "taskfuse_spec.yaml").read_text())
    assert replay["method"] == {"--partitions": "partitioned_task_arithmetic", "--sparsify": "dare_linear"}[options[0]]
    again = taskfuse("merge", str(out / "taskfuse_spec.yaml"), "-o", str(tmp_path / "replayed"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "replayed" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert task_classifier(out, 1).config.id2label == BertForSequenceClassification.from_pretrained(
        root / f"ft_{TASKS[1]}").config.id2label


def test_learning_from_a_merge_of_the_classifiers_starts_at_that_merge(family, tmp_path):
    root, spec, data = family
    start_spec = tmp_path / "start.yaml"
    start_spec.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "params": {"scale": 0.5},
                                          "tensor_rules": {"missing": "copy_base", "extra": "drop"}}))
    assert taskfuse("merge", str(start_spec), "-o", str(tmp_path / "start")).returncode == 0
    out = tmp_path / "learned"
    done = taskfuse("learn", "atlas", "--spec", str(spec), "--data", str(data[0]), "--data", str(data[1]),
                    "--steps", "6", "--start", str(tmp_path / "start"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    learned = json.loads((out / "taskfuse_learned.json").read_text())
    assert learned["tasks"][0] == str((tmp_path / "start").resolve()) and len(learned["tasks"]) == 3
    assert learned["heads"] == {str(root / f"ft_{n}"): f"heads/{i}" for i, n in enumerate(TASKS)}
    again = taskfuse("merge", str(out / "taskfuse_spec.yaml"), "-o", str(tmp_path / "replayed"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "replayed" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_a_classifier_whose_head_reads_the_first_token_is_served_as_its_class_serves_it(tmp_path):
    """DistilBERT: no pooler, a pre-classifier on the first token; the head runs through the class's own forward."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM, DistilBertForSequenceClassification
    tokenizer = load_tokenizer()
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    DistilBertForMaskedLM(config).save_pretrained(tmp_path / "base")
    _save_tokenizer(tmp_path / "base")
    texts = fortune_texts_from_task()
    for i in range(2):
        torch.manual_seed(i + 1)
        tune = DistilBertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=2 + i)
        with torch.no_grad():  # a fine-tune's update, drawn: only the structure matters to what is checked here
            for p in tune.parameters():
                p.add_(0.05 * torch.randn_like(p))
        tune.save_pretrained(tmp_path / f"ft{i}")
        _write_unlabelled(tmp_path / f"{i}.jsonl", texts)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(tmp_path / "base"),
                                    "models": [{"path": str(tmp_path / f"ft{i}")} for i in range(2)]}))
    done = taskfuse("learn", "adamerging_task", "--spec", str(spec), "--data", str(tmp_path / "0.jsonl"), "--data",
                    str(tmp_path / "1.jsonl"), "--steps", "2", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    weights = [m["weight"] for m in yaml.safe_load((tmp_path / "out" / "taskfuse_spec.yaml").read_text())["models"]]
    base = DistilBertForMaskedLM.from_pretrained(tmp_path / "base").state_dict()
    for i in range(2):
        states = [DistilBertForSequenceClassification.from_pretrained(tmp_path / f"ft{j}").state_dict()
                  for j in range(2)]
        reference = DistilBertForSequenceClassification.from_pretrained(tmp_path / f"ft{i}").eval()
        reference.load_state_dict({**states[i], **{k: v + sum(w * (s[k] - v) for w, s in zip(weights, states))
                                                   for k, v in base.items() if k.startswith("distilbert.")}})
        assert set(load_file(tmp_path / "out" / "heads" / str(i) / "head.safetensors")) == {
            "pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"}
        assert torch.allclose(_logits(task_classifier(tmp_path / "out", i), texts),
                              _logits(reference, texts), atol=1e-5)


def fortune_texts_from_task(n=24):
    return list(load_task("fortune_language", 0, VARIANTS["tiny"].sizes).splits["train"].texts[:n])
