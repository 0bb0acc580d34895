"""Tiny causal LMs with a real tokenizer, for the GGUF and vocabulary tests: a byte-level BPE or a SentencePiece-style
BPE trained (with the `tokenizers` library) on Debian's fortune texts, and Llama-, Qwen2-, Qwen3- or Gemma3-style models built from transformers
configs, saved as the hub serves them."""
from __future__ import annotations

import json
from pathlib import Path

import torch

FORTUNES = Path("/usr/share/games/fortunes")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def fortune_texts(limit: int = 2000) -> list[str]:
    """Up to `limit` fortunes from the fortunes-min package the set-up installs."""
    texts = []
    for path in sorted(FORTUNES.glob("*")):
        if not path.suffix and path.is_file():  # skip the .dat indexes and .u8 copies
            texts += [t.strip() for t in path.read_text(errors="replace").split("\n%\n") if t.strip()]
    if not texts:
        raise FileNotFoundError(f"no fortunes under {FORTUNES}: run scripts/setup.sh (it installs fortunes-min)")
    return texts[:limit]


def byte_bpe_tokenizer(vocab_size: int = 320):
    """A GPT-2 style byte-level BPE tokenizer (Llama 3 / Qwen2 / SmolLM family) trained on fortunes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(fortune_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def sentencepiece_tokenizer(kind: str = "llama", vocab_size: int = 640):
    """A SentencePiece-style BPE tokenizer with byte fallback trained on fortunes, in transformers' own class for
    `kind`: "llama" (Llama 2 / Mistral: a "▁" before the text, `<s>`/`</s>`) or "gemma" (no prefix, `<bos>`/`<eos>`).
    Pieces are learnt within words with their leading "▁", as SentencePiece learns them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GemmaTokenizer, LlamaTokenizer

    cls, special = {"llama": (LlamaTokenizer, ["<unk>", "<s>", "</s>"]),
                    "gemma": (GemmaTokenizer, ["<pad>", "<eos>", "<bos>", "<unk>"])}[kind]
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always" if kind == "llama" else "never")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special + [f"<0x{b:02X}>" for b in range(256)])
    tok.train_from_iterator(fortune_texts(), trainer)
    learnt = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learnt["merges"]]
    return cls(vocab=learnt["vocab"], merges=merges, chat_template=CHAT_TEMPLATE, add_bos_token=True)


def tiny_causal_lm(arch: str, vocab_size: int, seed: int = 0, tie: bool = True, rope_scaling: dict | None = None,
                   layers: int = 2, attention_scale: float = 1.0):
    """A seeded random model of `arch`; `rope_scaling` (transformers' dict, e.g. {"rope_type": "linear", "factor":
    4.0}) scales its rotary embedding (Gemma 3: the global layers', every sixth). `attention_scale` multiplies the
    query and key projections: at the initialisation's scale attention is nearly uniform, so positions (and how
    they are rotated) barely move the logits."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tie)
    if rope_scaling is not None:
        common.update(rope_scaling=rope_scaling, rope_theta=10000.0 if arch != "gemma3" else 1_000_000.0)
    configs = {"llama": lambda: LlamaConfig(**common),
               "qwen2": lambda: Qwen2Config(**common),
               "qwen3": lambda: Qwen3Config(**common, head_dim=128),  # transformers reads no head_dim from a qwen3 GGUF
               # queries scaled by 1/sqrt(head_dim), as in every Gemma 3 but the 27B (and as llama.cpp runs them)
               "gemma3": lambda: Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=32)}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(configs[arch]()).eval()
    with torch.no_grad():  # random norms and biases too, so that a wrong offset or name shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(attention_scale)
    return model


def save_tiny_causal_lm(folder: Path, arch: str = "llama", seed: int = 0, tie: bool = True, pad_to: int = 128,
                        tokenizer=None, rope_scaling: dict | None = None, layers: int = 2,
                        attention_scale: float = 1.0) -> Path:
    """A tiny model and its tokenizer (default: the byte-level BPE) in `folder`; the embedding padded to a multiple
    of `pad_to` rows."""
    tok = tokenizer if tokenizer is not None else byte_bpe_tokenizer()
    rows = -(-len(tok) // pad_to) * pad_to
    tiny_causal_lm(arch, rows, seed, tie, rope_scaling, layers, attention_scale).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def save_finetune(folder: Path, base: Path, seed: int, added_tokens: tuple[str, ...] = (), pad_to: int | None = None,
                  arch: str = "llama", tie: bool = False) -> Path:
    """A fine-tune of the tiny model saved in `base` (same seeded initialisation, then moved), with its tokenizer;
    `added_tokens` become special tokens and the embedding is resized to hold them (to a multiple of `pad_to`, or
    exactly), as `resize_token_embeddings` does."""
    from transformers import AutoTokenizer

    from .checkpoints import perturb

    tok = AutoTokenizer.from_pretrained(base)
    rows = json.loads((Path(base) / "config.json").read_text())["vocab_size"]
    model = perturb(tiny_causal_lm(arch, rows, seed=0, tie=tie), seed=seed, scale=0.1)
    if added_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(added_tokens)})
    if added_tokens or pad_to:
        model.resize_token_embeddings(len(tok), pad_to_multiple_of=pad_to, mean_resizing=False)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)
