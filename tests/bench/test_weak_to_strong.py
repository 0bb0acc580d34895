"""The weak-to-strong study on tiny real Llamas and a real task: with the large model the small one, fusion finds
α = 1 and both fusion rows answer exactly as each task's expert does; the report has every row and its cost
against the large model; a large model with another tokenizer is refused before any training."""
import json

import pytest
import torch

from taskfuse.bench.weak_to_strong import EXPERTS, ROWS, run_weak_to_strong, sharing_unchanged
from taskfuse.errors import IncompatibleInputsError
from taskfuse.llm.zoo import Recipe
from taskfuse.testing.tiny_llm import save_tiny_causal_lm, sentencepiece_tokenizer

RECIPE = Recipe(rank=2, steps=3, batch=2, lr=1e-2)


def test_with_the_large_model_the_small_one_fusion_is_the_expert(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    tiny = save_tiny_causal_lm(tmp_path / "tiny", "llama", seed=3)
    result = run_weak_to_strong(tmp_path / "report", tiny, tiny, ("wordnet_pos",), {"test": 6}, RECIPE, multi=True,
                                log=lambda line: None)
    rows = result["rows"]
    assert set(rows) == {EXPERTS, *ROWS.values()}
    assert rows[ROWS["proxy"]] == rows[EXPERTS] == rows[ROWS["dynamic"]] == rows[ROWS["multi"]] \
        == rows[ROWS["routed"]]
    assert result["routing"]["test_picks"] == {"wordnet_pos": {"wordnet_pos": 1.0}}
    assert result["routing"]["experts_loaded"] == 1  # by the routed row: the one expert its router picked
    assert rows[ROWS["large"]] == rows[ROWS["small"]]
    assert result["mean_alpha"][ROWS["dynamic"]]["wordnet_pos"] == 1.0
    assert result["cost_vs_large"][ROWS["large"]] == 1.0 and result["cost_vs_large"][ROWS["dynamic"]] > 0
    written = json.loads((tmp_path / "report" / "result.json").read_text())
    assert written["rows"] == rows and "| dynamic logits fusion (task given) |" in \
        (tmp_path / "report" / "results.md").read_text()


def test_an_expert_shares_every_tensor_its_lora_left_alone(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    tiny = save_tiny_causal_lm(tmp_path / "tiny", "llama", seed=3)
    small = AutoModelForCausalLM.from_pretrained(tiny)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(r=2, target_modules=["q_proj"]))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    expert = sharing_unchanged(lora.merge_and_unload(), small)
    ids = torch.tensor([[1, 2, 3, 4]])
    mine, theirs = dict(expert.named_parameters()), dict(small.named_parameters())
    shared = {n for n in mine if mine[n] is theirs[n]}
    assert shared == {n for n in mine if "q_proj" not in n} and any("q_proj" in n for n in mine)
    with torch.no_grad():
        assert not torch.equal(expert(ids).logits, small(ids).logits)


def test_a_large_model_with_another_tokenizer_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    small = save_tiny_causal_lm(tmp_path / "small", "llama", seed=3)
    large = save_tiny_causal_lm(tmp_path / "large", "llama", seed=3, tokenizer=sentencepiece_tokenizer())
    with pytest.raises(IncompatibleInputsError, match="share one tokenizer"):
        run_weak_to_strong(tmp_path / "report", small, large, ("wordnet_pos",), {"test": 2}, RECIPE,
                           log=lambda line: None)
    assert not (tmp_path / "report").exists() and not (tmp_path / "cache" / "llm-experts").exists()
