"""Scaled rotary embeddings through GGUF: written as llama.cpp stores them, read back to the same transformers rule
and the same logits; what GGUF cannot carry refused by name with nothing written."""
import warnings

import numpy as np
import pytest
import torch

from taskfuse import api
from taskfuse.errors import CheckpointError
from taskfuse.io import gguf_rope, gguf_write
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.io.gguf_rope import UnsupportedRope, decode_rope, frequency_divisors
from taskfuse.io.gguf_rope_encode import encode_rope
from taskfuse.programs.gguf_output import convert_to_gguf, gguf_name
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

pytest.importorskip("gguf")

# Positions past every rule's original context (64 here), where the scaled and unscaled rotations differ most
IDS = torch.arange(3, 250).unsqueeze(0)
LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0,
          "original_max_position_embeddings": 64}


def load(folder):
    from transformers import AutoModelForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(folder).eval()


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def round_trip(folder, tmp_path):
    """The model in `folder` written as an f32 GGUF, then read back by our reader into a Hugging Face folder."""
    out = tmp_path / "gguf"
    convert_to_gguf(folder, out, "f32")
    back = tmp_path / "back"
    api.merge({"method": "passthrough", "models": [{"path": str(out / gguf_name(out, "f32"))}]}, back)
    return out / gguf_name(out, "f32"), back


def rule_of(model, layer_type=None):
    rope = model.config.rope_parameters
    rope = rope[layer_type] if layer_type else rope
    return {k: v for k, v in rope.items() if v is not None}


@pytest.mark.parametrize("arch, scaling", [
    ("llama", LLAMA3),
    ("llama", {"rope_type": "linear", "factor": 4.0}),
    ("qwen2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 16.0,
               "beta_slow": 2.0}),
])
def test_a_scaled_rotary_embedding_round_trips_to_the_same_logits(tmp_path, arch, scaling):
    folder = save_tiny_causal_lm(tmp_path / "model", arch, rope_scaling=scaling)
    _, back = round_trip(folder, tmp_path)
    original, read = load(folder), load(back)
    assert rule_of(read) == rule_of(original)
    assert torch.equal(logits(read), logits(original))
    unscaled = save_tiny_causal_lm(tmp_path / "unscaled", arch)  # the same seeded weights, rotation unscaled
    assert not torch.allclose(logits(load(unscaled)), logits(original), atol=1e-3)  # the scaling matters here


def test_gemma3_global_layers_keep_their_linear_scaling(tmp_path):
    folder = save_tiny_causal_lm(tmp_path / "model", "gemma3", rope_scaling={"rope_type": "linear", "factor": 8.0},
                                 layers=6)
    _, back = round_trip(folder, tmp_path)
    original, read = load(folder), load(back)
    for kind in ("full_attention", "sliding_attention"):
        assert rule_of(read, kind) == rule_of(original, kind)
    assert read.config.layer_types == original.config.layer_types and "full_attention" in read.config.layer_types
    torch.testing.assert_close(logits(read), logits(original), rtol=0, atol=1e-5)  # norms stored as 1 + w


def test_llama3_is_written_as_llama_cpp_reads_it(tmp_path):
    import gguf

    folder = save_tiny_causal_lm(tmp_path / "model", "llama", rope_scaling=LLAMA3)
    path, _ = round_trip(folder, tmp_path)
    reader = gguf.GGUFReader(path)
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    assert freqs.data.dtype == np.float32 and freqs.data.shape == (8,)  # one divisor per frequency of a 16-wide head
    assert freqs.data.max() == pytest.approx(4.0) and freqs.data.min() == pytest.approx(1.0)
    assert "llama.rope.scaling.type" not in reader.fields  # llama.cpp would apply a factor on top of the divisors


@pytest.mark.parametrize("head_dim, factor", [(128, 8.0), (64, 32.0)])  # Llama 3.1 8B, Llama 3.2 1B
def test_llama_3_rules_come_back_from_their_rope_freqs_alone(head_dim, factor):
    rule = {"factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
    divisors = frequency_divisors({**rule, "rope_theta": 500000.0}, head_dim)
    assert decode_rope({}, "llama", divisors, head_dim, 500000.0) == {"rope_type": "llama3", **rule}


def test_a_llama_cpp_file_without_our_record_reads_to_the_same_logits(tmp_path, monkeypatch):
    """llama.cpp's converter writes rope_freqs and no record: the rule is fitted at Llama 3's 8192 context (the
    factors scale with it) and gives the same rotation."""
    def without_record(config, arch, head_dim):
        fields, divisors = encode_rope(config, arch, head_dim)
        return {k: v for k, v in fields.items() if k != gguf_rope.RECORD_KEY}, divisors

    monkeypatch.setattr(gguf_write, "encode_rope", without_record)
    folder = save_tiny_causal_lm(tmp_path / "model", "llama", rope_scaling=LLAMA3)
    path, back = round_trip(folder, tmp_path)
    assert gguf_rope.RECORD_KEY not in __import__("gguf").GGUFReader(path).fields
    original, read = load(folder), load(back)
    fitted = rule_of(read)
    assert fitted["original_max_position_embeddings"] == 8192 and fitted["factor"] == 4.0
    assert fitted["low_freq_factor"] == pytest.approx(128.0) and fitted["high_freq_factor"] == pytest.approx(1024.0)
    torch.testing.assert_close(logits(read), logits(original), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch, scaling, message", [
    ("llama", {"rope_type": "dynamic", "factor": 2.0}, "dynamic"),
    ("qwen2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "attention_factor": 0.5},
     "attention_factor"),
    ("qwen2", LLAMA3, "llama3 rule on a 'qwen2'"),
])
def test_what_gguf_cannot_carry_is_refused_with_nothing_written(tmp_path, arch, scaling, message):
    folder = save_tiny_causal_lm(tmp_path / "model", arch, rope_scaling=scaling)
    with pytest.raises(CheckpointError, match=message) as error:
        convert_to_gguf(folder, tmp_path / "out", "f16")
    assert "model" in str(error.value) and "Fix" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_gemma3_whose_sliding_layers_llama_cpp_would_rotate_otherwise_is_refused(tmp_path):
    with pytest.raises(UnsupportedRope, match="sliding layers"):
        encode_rope({"model_type": "gemma3_text", "num_hidden_layers": 6, "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1e6}}}, "gemma3", 16)
    with pytest.raises(UnsupportedRope, match="layer_types"):
        encode_rope({"num_hidden_layers": 3, "layer_types": ["full_attention"] * 3}, "gemma3", 16)


def test_a_file_whose_scaling_cannot_be_rebuilt_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf_write, "encode_rope", lambda config, arch, head_dim: (
        {f"{arch}.rope.scaling.type": "longrope", f"{arch}.rope.scaling.factor": 4.0}, None))
    folder = save_tiny_causal_lm(tmp_path / "model", "llama")
    out = tmp_path / "gguf"
    convert_to_gguf(folder, out, "f32")
    with pytest.raises(CheckpointError, match="longrope.*Fix: use the model's safetensors"):
        Checkpoint.open(out / gguf_name(out, "f32"))
    with pytest.raises(UnsupportedRope, match="attn_factor"):
        decode_rope({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0,
                     "llama.rope.scaling.attn_factor": 0.5}, "llama", None, 16, 10000.0)
    with pytest.raises(UnsupportedRope, match="not Llama 3's rule"):
        divisors = frequency_divisors({**LLAMA3, "rope_theta": 10000.0}, 16)
        divisors[0] = 1.5
        decode_rope({gguf_rope.RECORD_KEY: '{"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0, '
                                           '"original_max_position_embeddings": 64}'}, "llama", divisors, 16, 10000.0)


def test_a_rope_freqs_of_ones_reads_as_the_unscaled_model_it_is(tmp_path, monkeypatch):
    """Some converters write rope_freqs for every llama; all ones, llama.cpp divides each frequency by 1."""
    monkeypatch.setattr(gguf_write, "encode_rope", lambda config, arch, head_dim: (
        {}, np.ones(head_dim // 2, dtype=np.float32)))
    folder = save_tiny_causal_lm(tmp_path / "model", "llama")
    path, back = round_trip(folder, tmp_path)
    assert any(t.name == "rope_freqs.weight" for t in __import__("gguf").GGUFReader(path).tensors)
    original, read = load(folder), load(back)
    assert rule_of(read) == rule_of(original)
    assert torch.equal(logits(read), logits(original))


@pytest.mark.parametrize("record, message", [
    ("{not json", "not JSON"),
    ('{"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0}', "original_max_position_embeddings"),
    ('{"factor": "4", "low_freq_factor": 1.0, "high_freq_factor": 8.0, "original_max_position_embeddings": 64}',
     "positive numbers"),
    ("[4.0, 1.0, 8.0, 64]", "llama3 rule"),
])
def test_a_malformed_scaling_record_is_refused_by_name(tmp_path, monkeypatch, record, message):
    def with_record(config, arch, head_dim):
        fields, divisors = encode_rope(config, arch, head_dim)
        return {**fields, gguf_rope.RECORD_KEY: record}, divisors

    monkeypatch.setattr(gguf_write, "encode_rope", with_record)
    folder = save_tiny_causal_lm(tmp_path / "model", "llama", rope_scaling=LLAMA3)
    out = tmp_path / "gguf"
    convert_to_gguf(folder, out, "f32")
    with pytest.raises(CheckpointError, match=f"{gguf_rope.RECORD_KEY}.*{message}.*Fix: use the model's safetensors"):
        Checkpoint.open(out / gguf_name(out, "f32"))
