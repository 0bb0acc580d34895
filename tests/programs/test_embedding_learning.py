"""`taskfuse learn --spec` over embedding models: real tiny sentence-transformers models (a BERT built from a
transformers config, CLS pooling and normalisation, saved by sentence-transformers), fine-tuned here with
sentence-transformers' own MultipleNegativesRankingLoss on two of the benchmark's real Debian-text tasks, one as
labelled texts (wordnet_pos, each label written as its prompt) and one as pairs (each fortune's opening and its
rest); and the kinds of model learn --spec refuses."""
import json
import shutil

import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer, losses, models
from transformers import BertConfig, BertForMaskedLM, BertModel

from taskfuse.eval.encoder import base_encoder_dir, load_tokenizer
from taskfuse.eval.tasks import load_task
from taskfuse.programs.spec_models import EMBEDDING, model_kind
from taskfuse.zoo.recipe import VARIANTS
from tests.cli.test_user_errors import assert_user_error, taskfuse

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _tiny_bert(folder, seed=0, cls=BertModel):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(load_tokenizer()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    cls(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (base_encoder_dir() / name).exists():
            shutil.copy(base_encoder_dir() / name, folder / name)


def _labelled(n=96):
    task = load_task("wordnet_pos", 0, VARIANTS["tiny"].sizes)
    prompts = task.label_prompts()
    split = task.splits["train"]
    return [{"text": t, "label": prompts[int(y)]} for t, y in list(zip(split.texts, split.labels))[:n]]


def _pairs(n=48):
    split = load_task("fortune_language", 0, VARIANTS["tiny"].sizes).splits["train"]
    rows = []
    for text in split.texts:
        words = text.split()
        if len(words) >= 6:
            rows.append({"text": " ".join(words[:len(words) // 2]), "positive": " ".join(words[len(words) // 2:])})
    return rows[:n]


def _fine_tune(model, rows, seed):
    """Sentence-transformers' own loss on (text, key) pairs, 30 steps of 8: in-batch negatives."""
    torch.manual_seed(seed)
    loss = losses.MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    key = "positive" if "positive" in rows[0] else "label"
    for step in range(30):
        batch = [rows[(step * 8 + j) % len(rows)] for j in range(8)]
        features = [model.tokenize([r["text"] for r in batch]), model.tokenize([r[key] for r in batch])]
        loss(features, None).backward()
        optimizer.step()
        optimizer.zero_grad()


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A base sentence-transformers model and its fine-tunes on labelled texts and on pairs, with each task's data."""
    root = tmp_path_factory.mktemp("embedders")
    _tiny_bert(root / "raw")

    def sentence_model():
        transformer = models.Transformer(str(root / "raw"), max_seq_length=32)
        return SentenceTransformer(modules=[transformer, models.Pooling(32, pooling_mode="cls"), models.Normalize()],
                                   device="cpu")

    sentence_model().save(str(root / "base"))
    data = {"labels": _write_jsonl(root / "labels.jsonl", _labelled()),
            "pairs": _write_jsonl(root / "pairs.jsonl", _pairs())}
    for i, kind in enumerate(data):
        model = sentence_model()
        _fine_tune(model, [json.loads(line) for line in data[kind].read_text().splitlines()], i)
        model.save(str(root / f"ft_{kind}"))
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(root / "base"),
                                    "models": [{"path": str(root / f"ft_{k}")} for k in data]}))
    return root, spec, list(data.values())


def _learn(method, spec, data, out, *extra):
    return taskfuse("learn", method, "--spec", spec, *(a for d in data for a in ("--data", d)), "-o", out, *extra)


@pytest.mark.parametrize("method", ["atlas", "self_positioning"])
def test_learned_embedding_merges_load_as_sentence_transformers_and_replay_bit_for_bit(family, tmp_path, method):
    root, spec, data = family
    out = tmp_path / "learned"
    done = _learn(method, spec, data, out, "--steps", "15")
    assert done.returncode == 0, done.stderr
    learned = json.loads((out / "taskfuse_learned.json").read_text())
    assert learned["losses"][-1] < learned["losses"][0], learned["losses"]
    assert [d["kind"] for d in learned["data_seen"]] == ["labels", "pairs"]
    if method == "self_positioning":  # its probe set: 16 per class of the labelled task, the pairs file whole
        assert learned["data_seen"][0]["examples"] < 96 and learned["data_seen"][1]["examples"] == 48
        assert learned["coefficients"]["scale"] != 1.0
    merged = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in merged] == ["Transformer", "Pooling", "Normalize"]
    assert merged[1].get_config_dict()["pooling_mode"] == "cls"
    texts = [json.loads(line)["text"] for line in data[1].read_text().splitlines()[:6]]
    embeddings = merged.encode(texts, convert_to_tensor=True)
    for model in ("base", "ft_labels", "ft_pairs"):  # the merge is none of its inputs
        other = SentenceTransformer(str(root / model), device="cpu").encode(texts, convert_to_tensor=True)
        assert (embeddings - other).abs().max() > 1e-4, model
    again = taskfuse("merge", out / "taskfuse_spec.yaml", "-o", tmp_path / "replayed")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "replayed" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_learning_over_embeddings_takes_what_the_learned_view_computes(family, tmp_path):
    """The written merge embeds as θ(Λ) computed by hand from the record's coefficients and the models' weights."""
    root, spec, data = family
    out = tmp_path / "learned"
    assert _learn("atlas", spec, data, out, "--steps", "5").returncode == 0
    lam = json.loads((out / "taskfuse_learned.json").read_text())["coefficients"]
    base = BertModel.from_pretrained(root / "base")
    tunes = [BertModel.from_pretrained(root / f"ft_{k}").state_dict() for k in ("labels", "pairs")]
    state = base.state_dict()
    for name in lam:
        state[name] = state[name] + sum(w * (t[name] - state[name]) for w, t in zip(lam[name], tunes))
    base.load_state_dict(state)
    written = BertModel.from_pretrained(out).state_dict()
    for name in lam:
        torch.testing.assert_close(written[name], state[name], atol=1e-6, rtol=1e-5)


def test_bare_encoders_learn_with_sentence_transformers_mean_pooling(tmp_path):
    for i, name in enumerate(("base", "a", "b")):
        _tiny_bert(tmp_path / name)
        if i:  # a fine-tune: the base moved by seeded noise
            model = BertModel.from_pretrained(tmp_path / name)
            torch.manual_seed(i)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            model.save_pretrained(tmp_path / name)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(tmp_path / "base"),
                                    "models": [{"path": str(tmp_path / n)} for n in "ab"]}))
    data = [_write_jsonl(tmp_path / "pairs.jsonl", _pairs(16))] * 2
    done = _learn("atlas", spec, data, tmp_path / "out", "--steps", "3")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "modules.json").exists()


def test_what_embedding_models_cannot_learn_is_refused_with_the_fix(family, tmp_path):
    root, spec, data = family
    assert_user_error(_learn("adamerging_layer", spec, data, tmp_path / "o1"),
                      "an embedding model makes none", "Fix: learn with atlas")
    assert_user_error(_learn("atlas_fewshot", spec, data, tmp_path / "o2"),
                      "pairs.jsonl holds pairs, which have no classes", "Fix:")
    mixed = _write_jsonl(tmp_path / "mixed.jsonl", [*_pairs(3), {"text": "a line", "label": "noun"}])
    assert_user_error(_learn("atlas", spec, [data[0], mixed], tmp_path / "o3"),
                      "mixed.jsonl:4:", 'first line is a {"text", "positive"} line', "Fix:")
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_a_masked_lm_or_a_token_classification_adapter_is_refused_not_learned_as_a_causal_lm(family, tmp_path):
    """Before, a spec of masked LMs went to the causal-LM loader, which draws the head it lacks at random."""
    for name in ("base", "a", "b"):
        _tiny_bert(tmp_path / name, cls=BertForMaskedLM)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(tmp_path / "base"),
                                    "models": [{"path": str(tmp_path / n)} for n in "ab"]}))
    text = _write_jsonl(tmp_path / "text.jsonl", [{"text": "a line of text"}] * 4)
    assert_user_error(_learn("atlas", spec, [text, text], tmp_path / "out"),
                      f"model {tmp_path / 'a'} is a BertForMaskedLM", "its head would be drawn at random", "Fix:")
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification, BertForTokenClassification
    BertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=3).save_pretrained(
        tmp_path / "classifier")
    tagger = BertForTokenClassification.from_pretrained(tmp_path / "base", num_labels=3)
    get_peft_model(tagger, LoraConfig(task_type=TaskType.TOKEN_CLS, r=2, target_modules=["query"])).save_pretrained(
        tmp_path / "adapter")
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(tmp_path / "base"),
                                    "models": [{"path": f"{tmp_path / 'base'}+{tmp_path / 'adapter'}"}]}))
    assert_user_error(_learn("atlas", spec, [text], tmp_path / "out"),
                      "is a PEFT adapter for task type TOKEN_CLS", "(SEQ_CLS)", "Fix:")
    root_, embed_spec, _ = family
    mixed = yaml.safe_load(embed_spec.read_text())
    mixed["models"].append({"path": str(tmp_path / "classifier")})
    spec.write_text(yaml.safe_dump(mixed))
    assert_user_error(_learn("atlas", spec, [text] * 3, tmp_path / "out"), "the spec mixes kinds of model")
    assert not (tmp_path / "out").exists()


def test_lora_adapters_of_an_embedding_model_learn_as_the_models_they_adapt(family, tmp_path):
    """PEFT FEATURE_EXTRACTION adapters of the base's transformer, each trained with sentence-transformers' own loss
    through the base's pooling: learn --spec learns over base + ΔW, writes a sentence-transformers folder, and the
    replay spec (naming the adapters) gives it back bit for bit."""
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    root, _, data = family
    adapters = []
    for i, file in enumerate(data):
        model = SentenceTransformer(str(root / "base"), device="cpu")
        attribute = "model" if isinstance(getattr(model[0], "model", None), torch.nn.Module) else "auto_model"
        lora = get_peft_model(getattr(model[0], attribute), LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION, r=4, lora_alpha=8, target_modules=["query", "value", "dense"]))
        setattr(model[0], attribute, lora)
        _fine_tune(model, [json.loads(line) for line in file.read_text().splitlines()], i)
        lora.save_pretrained(tmp_path / f"adapter{i}")
        adapters.append(tmp_path / f"adapter{i}")
    assert json.loads((adapters[0] / "adapter_config.json").read_text())["task_type"] == "FEATURE_EXTRACTION"
    # the second as sentence-transformers keeps an adapter model: the adapter at the root of its folder, beside the
    # base's modules; sentence-transformers loads it as the base with the adapter, and so does taskfuse
    for part in (root / "base").iterdir():
        if part.name not in ("model.safetensors", "config.json"):
            (shutil.copytree if part.is_dir() else shutil.copy)(part, adapters[1] / part.name)
    texts = [json.loads(line)["text"] for line in data[0].read_text().splitlines()[:6]]
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({"method": "passthrough",
                                                       "models": [{"path": str(adapters[1])}]}))
    assert taskfuse("merge", tmp_path / "one.yaml", "-o", tmp_path / "read").returncode == 0
    read, peft_read = (SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
                       for folder in (tmp_path / "read", adapters[1]))
    assert [type(m).__name__ for m in SentenceTransformer(str(tmp_path / "read"), device="cpu")][1:] == [
        "Pooling", "Normalize"]
    torch.testing.assert_close(read, peft_read, atol=1e-5, rtol=1e-4)
    base_read = SentenceTransformer(str(root / "base"), device="cpu").encode(texts, convert_to_tensor=True)
    assert (read - base_read).abs().max() > 1e-3  # the adapter's update is in what both read
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(root / "base"),
                                    "models": [{"path": str(a)} for a in adapters]}))
    # their merge as one adapter keeps their task type, so PEFT's auto class for it loads the merge
    assert taskfuse("merge", spec, "--as-adapter", "-o", tmp_path / "merged").returncode == 0
    merged_config = json.loads((tmp_path / "merged" / "adapter_config.json").read_text())
    assert merged_config["task_type"] == "FEATURE_EXTRACTION"
    from peft import AutoPeftModelForFeatureExtraction
    assert type(AutoPeftModelForFeatureExtraction.from_pretrained(tmp_path / "merged").base_model.model) is BertModel
    assert model_kind(str(tmp_path / "merged")) == EMBEDDING
    # PEFT's plain adapter (no task type) adapts its base as it is, so it learns as its base's kind
    (tmp_path / "merged" / "adapter_config.json").write_text(json.dumps({**merged_config, "task_type": None}))
    assert model_kind(str(tmp_path / "merged")) == model_kind(f"{root / 'base'}+{tmp_path / 'merged'}") == EMBEDDING
    out = tmp_path / "learned"
    done = _learn("atlas", spec, data, out, "--steps", "10")
    assert done.returncode == 0, done.stderr
    learned = json.loads((out / "taskfuse_learned.json").read_text())
    assert learned["losses"][-1] < learned["losses"][0], learned["losses"]
    merged = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in merged] == ["Transformer", "Pooling", "Normalize"]
    # θ(Λ) by hand: the base plus each adapter's update as PEFT merges it, weighted by the learned coefficients
    lam = learned["coefficients"]
    state = BertModel.from_pretrained(root / "base").state_dict()
    tunes = [PeftModel.from_pretrained(BertModel.from_pretrained(root / "base"), a).merge_and_unload().state_dict()
             for a in adapters]
    written = BertModel.from_pretrained(out).state_dict()
    query = "encoder.layer.0.attention.self.query.weight"
    assert query in lam and any(w != 0 for w in lam[query])
    for name in lam:
        expected = state[name] + sum(w * (t[name] - state[name]) for w, t in zip(lam[name], tunes))
        torch.testing.assert_close(written[name], expected, atol=1e-6, rtol=1e-5)
    again = taskfuse("merge", out / "taskfuse_spec.yaml", "-o", tmp_path / "replayed")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "replayed" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
