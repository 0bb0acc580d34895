"""Vocabulary alignment on real tokenizers: a byte-level BPE trained on fortunes, the same with added special
tokens and a resized embedding, and SmolLM2's own 49,152-token tokenizer read from its GGUF. Rows are matched by
token, the union keeps the base's ids and appends what the others add, padding rounds the rows up, and a row a model
lacks takes the base's row (so it moves nothing in delta space) or, for a token the base lacks, the mean of the
models that have it."""
import pytest
import torch

from taskfuse.errors import CheckpointError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.io.transformers_model import load_tokenizer
from taskfuse.io.vocab import VocabAlignment, output_vocabulary, row_sources
from taskfuse.testing.tiny_llm import save_finetune, save_tiny_causal_lm, tiny_causal_lm

ADDED = ["<|tool|>", "<|think|>"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A base, a fine-tune with the same tokenizer, and a fine-tune with two added special tokens whose embedding
    was resized to hold them (without padding)."""
    root = tmp_path_factory.mktemp("vocab")
    base = save_tiny_causal_lm(root / "base", "llama", seed=0, tie=False)
    same = save_finetune(root / "same", base, seed=1)
    added = save_finetune(root / "added", base, seed=2, added_tokens=tuple(ADDED))
    return [Checkpoint.open(str(p)) for p in (base, same, added)]


def test_the_union_keeps_the_base_ids_and_appends_the_added_tokens(family):
    tokenizers = [load_tokenizer(c) for c in family]
    base_tokens = len(tokenizers[0])
    output = output_vocabulary(tokenizers, "union", pad_to_multiple_of=64)
    assert output.tokens[:base_tokens] == [t for t, _ in sorted(tokenizers[0].get_vocab().items(),
                                                                 key=lambda item: item[1])]
    assert output.tokens[base_tokens:] == ADDED and output.rows == 384 and output.rows % 64 == 0
    assert set(ADDED) <= set(output.tokenizer.all_special_tokens)
    text = "<|tool|> a fortune <|think|>"  # the output tokenizer encodes as the model that added the tokens
    assert output.tokenizer(text).input_ids == tokenizers[2](text).input_ids
    assert len(tokenizers[0]) == base_tokens  # the base's own tokenizer is left as it was


def test_rows_are_matched_by_token_and_missing_rows_take_the_fill(family):
    base, same, added = family
    tokenizers = [load_tokenizer(c) for c in family]
    output = output_vocabulary(tokenizers, "union", pad_to_multiple_of=64)
    alignment = VocabAlignment(family, tokenizers, output, base=0)
    name = "model.embed_tokens.weight"
    views = [alignment.view(i) for i in range(3)]
    assert all(v.meta(name).shape == (384, 64) and v.config["vocab_size"] == 384 for v in views)
    aligned = [v.read(name) for v in views]
    n = len(tokenizers[0])
    for view, tensor, ckpt in zip(views, aligned, family):
        torch.testing.assert_close(tensor[:n], ckpt.read(name)[:n])  # shared tokens: the model's own rows
    new_rows = [tokenizers[2].convert_tokens_to_ids(t) for t in ADDED]
    own_new = added.read(name)[new_rows]
    for tensor in aligned:  # the base lacks them: every model's row is the one model that has them
        torch.testing.assert_close(tensor[n:n + 2], own_new)
    torch.testing.assert_close(aligned[0][n + 2:], base.read(name)[n + 2:384])  # padding: the base's rows
    deltas = [t - aligned[0] for t in aligned]  # in delta space the models lacking a token move nothing there
    assert torch.equal(deltas[1][n:], torch.zeros_like(deltas[1][n:]))
    assert not torch.equal(deltas[1][:n], torch.zeros_like(deltas[1][:n]))
    assert torch.equal(views[1].read("model.norm.weight"), same.read("model.norm.weight"))


def test_a_model_with_another_tokenizer_as_output(family):
    tokenizers = [load_tokenizer(c) for c in family]
    output = output_vocabulary(tokenizers, 2)
    assert output.rows == len(tokenizers[2])
    sources = row_sources(tokenizers[0], family[0].meta("model.embed_tokens.weight").shape[0], output)
    assert sources[:len(tokenizers[0])].tolist() == list(range(len(tokenizers[0])))
    assert sources[len(tokenizers[0]):].tolist() == [-1, -1]


def test_smollm2_tokenizer_with_added_special_tokens():
    from taskfuse.llm.base import smollm2_gguf
    from transformers import PreTrainedTokenizerFast
    path = smollm2_gguf()
    smol = PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
    extended = PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
    extended.add_special_tokens({"additional_special_tokens": ADDED})
    output = output_vocabulary([smol, extended], "union", pad_to_multiple_of=128)
    assert len(smol) == 49152 and output.rows == 49152 + 128 and output.tokens[49152:] == ADDED
    sources = row_sources(extended, 49154, output)
    assert sources[:49154].tolist() == list(range(49154)) and (sources[49154:] == -1).all()
    prompt = "<|im_start|>user\nWhat is a noun?<|im_end|><|tool|>"
    assert output.tokenizer(prompt).input_ids == extended(prompt).input_ids


def test_a_model_without_a_tokenizer_is_refused(family, tmp_path):
    model = tmp_path / "bare"
    tiny_causal_lm("llama", 384, seed=0).save_pretrained(model)
    with pytest.raises(CheckpointError, match="no tokenizer could be loaded .* Fix: save the model's tokenizer"):
        load_tokenizer(Checkpoint.open(str(model)))
