"""Merges across vocabularies, through the public API and mergekit's YAML: with `tokenizer_from: union` the output
holds every model's tokens (a token only one model added keeps that model's row), its tokenizer and embeddings
agree, and it generates; a model padded past its tokenizer merges on the real tokens and the output keeps the
tokenizer source's padding, or the multiple the spec asks for; a model without a tokenizer is refused."""
import json

import pytest
import torch
import yaml

from taskfuse import api
from taskfuse.errors import CheckpointError, IncompatibleInputsError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.spec.mergekit import translate_mergekit
from taskfuse.testing.tiny_llm import save_finetune, save_tiny_causal_lm, tiny_causal_lm

ADDED = ("<|tool|>", "<|think|>")
EMBED = "model.embed_tokens.weight"


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-merge")
    base = save_tiny_causal_lm(root / "base", "llama", seed=0, tie=False)  # 320 tokens, 384 rows
    return {"base": base, "same": save_finetune(root / "same", base, seed=1),
            "added": save_finetune(root / "added", base, seed=2, added_tokens=ADDED),
            "padded": save_finetune(root / "padded", base, seed=3, pad_to=256)}  # 320 tokens, 512 rows


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def rows(folder, name=EMBED):
    return Checkpoint.open(str(folder)).read(name)


def test_union_of_an_added_token_vocabulary(family, tmp_path):
    spec = {"method": "task_arithmetic", "base": str(family["base"]), "params": {"scale": 0.5}, "dtype": "float32",
            "models": [{"path": str(family["same"])}, {"path": str(family["added"])}],
            "tokenizer_from": "union", "pad_vocab_to_multiple_of": 64}
    api.merge(spec, tmp_path / "out")
    model, tok = load(tmp_path / "out")
    assert len(tok) == 322 and set(ADDED) <= set(tok.all_special_tokens)
    assert model.config.vocab_size == 384 == model.get_input_embeddings().weight.shape[0]
    merged, base, same, added = (rows(f) for f in (tmp_path / "out", family["base"], family["same"],
                                                     family["added"]))
    expected = base[:320] + 0.5 * ((same[:320] - base[:320]) + (added[:320] - base[:320]))
    torch.testing.assert_close(merged[:320], expected)  # shared tokens: task arithmetic row by row
    torch.testing.assert_close(merged[320:322], added[320:322])  # only `added` has them: its rows
    text = "<|tool|> a fortune <|think|>"
    assert tok(text).input_ids == load(family["added"])[1](text).input_ids
    ids = tok(text, return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


def test_a_padded_model_merges_on_its_real_tokens(family, tmp_path):
    spec = {"method": "linear", "dtype": "float32", "models": [{"path": str(family["base"])},
                                                              {"path": str(family["padded"])}]}
    api.merge(spec, tmp_path / "out")  # rows 384 and 512: matched by token, the base's padding kept
    merged, base, padded = rows(tmp_path / "out"), rows(family["base"]), rows(family["padded"])
    assert merged.shape[0] == 384 and json.loads((tmp_path / "out" / "config.json").read_text())["vocab_size"] == 384
    torch.testing.assert_close(merged[:320], (base[:320] + padded[:320]) / 2)
    api.merge({**spec, "pad_vocab_to_multiple_of": 100}, tmp_path / "out100")
    assert rows(tmp_path / "out100").shape[0] == 400


def test_mergekit_union_and_tokenizer_block(family, tmp_path):
    config = tmp_path / "mk.yaml"
    config.write_text(f"merge_method: task_arithmetic\nbase_model: {family['base']}\ndtype: float32\n"
                      f"models:\n  - model: {family['same']}\n    parameters: {{weight: 0.5}}\n"
                      f"  - model: {family['added']}\n    parameters: {{weight: 0.5}}\n"
                      "tokenizer:\n  source: union\n  pad_to_multiple_of: 32\n")
    spec = translate_mergekit(yaml.safe_load(config.read_text()), str(config))
    assert spec["tokenizer_from"] == "union" and spec["pad_vocab_to_multiple_of"] == 32
    api.merge(spec, tmp_path / "out")
    assert rows(tmp_path / "out").shape[0] == 352 and len(load(tmp_path / "out")[1]) == 322


def test_a_model_without_a_tokenizer_is_refused_before_anything_is_written(family, tmp_path):
    bare = tmp_path / "bare"
    tiny_causal_lm("llama", 512, seed=0, tie=False).save_pretrained(bare)
    spec = {"method": "linear", "models": [{"path": str(family["base"])}, {"path": str(bare)}]}
    with pytest.raises(IncompatibleInputsError, match="vocabulary size mismatch .*384 rows.*512 rows.* no tokenizer"):
        api.merge(spec, tmp_path / "out")
    with pytest.raises(CheckpointError, match="no tokenizer could be loaded"):
        api.merge({**spec, "tokenizer_from": "union"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
