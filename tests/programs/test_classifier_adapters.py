"""PEFT adapters for sequence classification (task type SEQ_CLS) as models of a spec: real LoRA adapters trained here
with PEFT on two of the benchmark's real Debian-text tasks, over a tiny BERT base saved as a pre-training checkpoint
(as bert-base-uncased is: `bert.` names, a pooler, no classification head). Each adapter saves its head whole
(modules_to_save), which the base lacks: read as the classifier it was trained as, it reproduces PEFT's own logits,
`taskfuse learn --spec` learns over a library of them with each task keeping its head, and `taskfuse merge` treats
the heads as any classifier's."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification

from taskfuse.eval.encoder import load_tokenizer
from taskfuse.eval.tasks import load_task
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.programs.classifier_heads import task_classifier
from taskfuse.zoo.recipe import VARIANTS
from tests.cli.test_user_errors import assert_user_error, taskfuse
from tests.programs.test_classifier_learning import (TASKS, _logits, _save_tokenizer, _texts, fine_tune, save_tiny_base,
                                                     write_validation)


def _adapter(base, task, seed, out):
    from peft import LoraConfig, TaskType, get_peft_model
    torch.manual_seed(seed)
    classifier = BertForSequenceClassification.from_pretrained(base, num_labels=len(task.label_names))
    peft = get_peft_model(classifier, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8,
                                                 target_modules=["query", "value", "dense"]))
    fine_tune(peft, task, load_tokenizer())
    peft.save_pretrained(out)
    return peft.eval()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """The base, one SEQ_CLS adapter per task (named BASE+ADAPTER in the spec), each task's validation texts with
    class indices (an adapter keeps no class names), and PEFT's own models for reference."""
    root = tmp_path_factory.mktemp("adapters")
    save_tiny_base(BertForPreTraining, root / "base")
    data, peft = [], []
    for i, name in enumerate(TASKS):
        task = load_task(name, 0, VARIANTS["tiny"].sizes)
        peft.append(_adapter(root / "base", task, i, root / f"lora_{name}"))
        data.append(write_validation(task, root / f"{name}.jsonl", int))
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(root / "base"),
                                    "models": [{"path": f"{root / 'base'}+{root / f'lora_{n}'}"} for n in TASKS]}))
    return root, spec, data, peft


def test_a_seq_cls_adapter_reads_as_the_classifier_peft_trained(library):
    root, spec, data, peft = library
    adapter = Checkpoint.open(f"{root / 'base'}+{root / f'lora_{TASKS[1]}'}")
    assert adapter.config["architectures"] == ["BertForSequenceClassification"]
    classes = len(load_task(TASKS[1], 0, VARIANTS["tiny"].sizes).label_names)
    assert adapter.config["id2label"] == {str(i): f"LABEL_{i}" for i in range(classes)}
    model = BertForSequenceClassification(BertConfig(**{k: v for k, v in adapter.config.items()
                                                        if k != "model_type"})).eval()
    model.load_state_dict({n: adapter.read(n).float() for n in model.state_dict()})
    texts = _texts(data[1])
    assert torch.allclose(_logits(model, texts), _logits(peft[1], texts), atol=1e-5)
    # the head is the adapter's, not drawn again: a second reading gives the same bytes
    assert torch.equal(adapter.read("classifier.weight"), Checkpoint.open(
        f"{root / 'base'}+{root / f'lora_{TASKS[1]}'}").read("classifier.weight"))


def test_learning_over_seq_cls_adapters_serves_each_task_with_its_head_and_replays_bit_for_bit(library, tmp_path):
    root, spec, data, peft = library
    out = _learned("adamerging_task", spec, data, tmp_path, 3)
    replay = yaml.safe_load((out / "taskfuse_spec.yaml").read_text())
    weights = [m["weight"] for m in replay["models"]]
    assert replay["tensor_rules"]["extra"] == "drop"
    # the reference, computed here from PEFT's merged classifiers: body θ₀ + Σ_t w_t ΔW_t, each task its own head
    base = BertForPreTraining.from_pretrained(root / "base").state_dict()
    merged_models = [_reloaded(root, n).merge_and_unload() for n in TASKS]
    states = [m.state_dict() for m in merged_models]
    body = {k: v + sum(w * (s[k] - v) for w, s in zip(weights, states)) for k, v in base.items()
            if k.startswith("bert.") and v.is_floating_point()}
    for i, state in enumerate(states):
        reference = merged_models[i]
        reference.load_state_dict({**state, **body})
        texts = _texts(data[i])
        assert torch.allclose(_logits(task_classifier(out, i), texts), _logits(reference.eval(), texts), atol=1e-5)
        assert not torch.allclose(_logits(task_classifier(out, i), texts), _logits(peft[i], texts), atol=1e-3)
    assert set(load_file(out / "heads" / "0" / "head.safetensors")) == {"classifier.weight", "classifier.bias"}
    again = taskfuse("merge", str(out / "taskfuse_spec.yaml"), "-o", str(tmp_path / "replayed"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "replayed" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def _learned(method, spec, data, tmp_path, steps):
    out = tmp_path / "learned"
    done = taskfuse("learn", method, "--spec", str(spec), "--data", str(data[0]), "--data", str(data[1]),
                    "--steps", str(steps), "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _reloaded(root, name):
    from peft import PeftModel
    classes = len(load_task(name, 0, VARIANTS["tiny"].sizes).label_names)
    return PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(root / "base", num_labels=classes),
                                     root / f"lora_{name}")


def test_atlas_over_seq_cls_adapters_learns(library, tmp_path):
    root, spec, data, peft = library
    out = _learned("atlas", spec, data, tmp_path, 12)
    losses = json.loads((out / "taskfuse_learned.json").read_text())["losses"]
    assert losses[-1] < losses[0], losses


def test_a_static_merge_of_seq_cls_adapters_treats_them_as_the_classifiers_they_are(library, tmp_path):
    """As full classifiers fine-tuned from a pre-training base: they lack its pre-training head and hold their own
    heads, which tensor_rules must say what to do with."""
    root, spec, data, peft = library
    refused = taskfuse("merge", str(spec), "-o", str(tmp_path / "out"))
    assert_user_error(refused, "cls.predictions.bias", "tensor_rules.missing", "copy_base")
    assert not (tmp_path / "out").exists()
    told = tmp_path / "told.yaml"
    told.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()),
                                    "tensor_rules": {"missing": "copy_base", "extra": "drop"}}))
    done = taskfuse("merge", str(told), "-o", str(tmp_path / "merged"))
    assert done.returncode == 0, done.stderr
    merged, base = load_file(tmp_path / "merged" / "model.safetensors"), load_file(root / "base" / "model.safetensors")
    kept = "cls.predictions.bias"
    assert "classifier.weight" not in merged and torch.equal(merged[kept], base[kept].to(merged[kept].dtype))
    # task arithmetic of LoRA updates: the base plus the sum of both adapters' ΔW
    query = "bert.encoder.layer.0.attention.self.query.weight"
    deltas = [_reloaded(root, n).merge_and_unload().state_dict()[query] - base[query] for n in TASKS]
    assert torch.allclose(merged[query].float(), base[query] + sum(deltas), atol=1e-3)


def test_an_adapter_whose_classifier_lost_its_pooler_is_refused_before_anything_is_written(library, tmp_path):
    """Over a masked-LM base (no pooler) PEFT draws BERT's pooler at random and does not save it."""
    from peft import LoraConfig, TaskType, get_peft_model
    root, spec, data, peft = library
    BertForMaskedLM(BertConfig.from_pretrained(root / "base")).save_pretrained(tmp_path / "mlm")
    _save_tokenizer(tmp_path / "mlm")
    classifier = BertForSequenceClassification.from_pretrained(tmp_path / "mlm", num_labels=2)
    get_peft_model(classifier, LoraConfig(task_type=TaskType.SEQ_CLS, r=2, target_modules=["query"])).save_pretrained(
        tmp_path / "lost")
    lost = tmp_path / "spec.yaml"
    lost.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(tmp_path / "mlm"),
                                    "models": [{"path": f"{tmp_path / 'mlm'}+{tmp_path / 'lost'}"}]}))
    done = taskfuse("learn", "atlas", "--spec", str(lost), "--data", str(data[0]),
                    "--steps", "2", "-o", str(tmp_path / "out"))
    assert_user_error(done, "AdapterError", "bert.pooler.dense.weight", "drew it at random", "modules_to_save")
    assert not (tmp_path / "out").exists()


def test_a_label_beyond_an_adapters_head_is_refused_with_its_classes(library, tmp_path):
    root, spec, data, peft = library
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(data[0].read_text() + json.dumps({"text": "a text", "label": 99}) + "\n")
    done = taskfuse("learn", "atlas", "--spec", str(spec), "--data", str(wrong), "--data", str(data[1]),
                    "--steps", "2", "-o", str(tmp_path / "out"))
    assert_user_error(done, "TaskDataError", "label 99", "LABEL_0")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, method", [("fisher", "fisher"), ("gram", "regmean")])
def test_statistics_of_seq_cls_adapters_feed_a_data_aware_merge(library, tmp_path, kind, method):
    """The Fisher of each line's class through the adapter's own head (or its layers' input Grams), then the merge
    that weighs the adapters' updates by them."""
    root, spec, data, peft = library
    models = yaml.safe_load(spec.read_text())["models"]
    for i, model in enumerate(models):
        done = taskfuse("statistics", model["path"], "--kind", kind, "--data", str(data[i]), "-o",
                        str(tmp_path / f"stats{i}"))
        assert done.returncode == 0, done.stderr
        model["statistics"] = str(tmp_path / f"stats{i}")
    stats = load_file(next((tmp_path / "stats0").glob("*.safetensors")))
    # texts of up to 200 characters cut to the tiny model's 128 positions (they ended inside it before)
    assert json.loads((tmp_path / "stats0" / "statistics.json").read_text())["data"]["max_tokens"] == 128
    assert any(n.startswith("bert.encoder.layer.0.attention.self.query") for n in stats)
    if kind == "fisher":  # the head's Fisher is gathered too: its gradient flows through the adapter's head
        assert stats["classifier.weight"].abs().sum() > 0
    weighted = tmp_path / "merge.yaml"
    weighted.write_text(yaml.safe_dump({"method": method, "base": str(root / "base"), "models": models,
                                        "tensor_rules": {"missing": "copy_base", "extra": "drop"}}))
    done = taskfuse("merge", str(weighted), "-o", str(tmp_path / "merged"))
    assert done.returncode == 0, done.stderr
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    base = load_file(root / "base" / "model.safetensors")
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(merged[query], base[query].to(merged[query].dtype))


def test_a_seq_cls_adapter_over_a_base_saved_as_a_classifier_replaces_its_head(library, tmp_path):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    root, spec, data, peft = library
    BertForSequenceClassification.from_pretrained(root / "base", num_labels=4).save_pretrained(tmp_path / "base")
    _save_tokenizer(tmp_path / "base")
    torch.manual_seed(3)
    model = get_peft_model(BertForSequenceClassification.from_pretrained(tmp_path / "base"),
                           LoraConfig(task_type=TaskType.SEQ_CLS, r=2, target_modules=["query"],
                                      init_lora_weights=False))
    with torch.no_grad():
        model.base_model.model.classifier.modules_to_save["default"].weight.mul_(3)
    model.save_pretrained(tmp_path / "adapter")
    adapter = Checkpoint.open(f"{tmp_path / 'base'}+{tmp_path / 'adapter'}")
    reference = PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(tmp_path / "base"),
                                          tmp_path / "adapter").merge_and_unload().state_dict()
    assert set(adapter.tensors) == set(reference)
    assert all(torch.allclose(adapter.read(n).float(), reference[n], atol=1e-6) for n in reference)
    # written back as an adapter it keeps its task type: PEFT's auto class for classifiers loads it, head and all
    from peft import AutoPeftModelForSequenceClassification
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({
        "method": "task_arithmetic", "base": str(tmp_path / "base"),
        "models": [{"path": f"{tmp_path / 'base'}+{tmp_path / 'adapter'}"}]}))
    done = taskfuse("merge", str(tmp_path / "one.yaml"), "--as-adapter", "-o", str(tmp_path / "written"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "written" / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    tokens = torch.randint(5, 100, (3, 9))
    with torch.no_grad():
        expected = PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(tmp_path / "base"),
                                             tmp_path / "adapter")(input_ids=tokens).logits
        got = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "written")(input_ids=tokens).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
