"""A model's tokenizer as GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).

From a GGUF file the fields are copied as they are. From a Hugging Face folder they are built from the tokenizer
transformers loads: byte-level BPE only (Llama 3, Qwen2, SmolLM, GPT-2 style), whose vocabulary and merges GGUF
stores verbatim. SentencePiece vocabularies (Llama 2, Gemma) need scores and byte tokens rebuilt: refused for now.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

PAD_TOKEN = "[PAD{}]"  # rows of a padded embedding that no token uses


@dataclass(frozen=True)
class Field:
    key: str
    value: Any
    vtype: Any  # gguf.GGUFValueType
    sub_type: Any = None  # element type of an array


def fields_from_gguf(reader) -> list[Field]:
    """Every tokenizer field of an open GGUFReader, with its stored types."""
    fields = []
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            array = len(field.types) > 1
            fields.append(Field(key, field.contents(), field.types[0], field.types[-1] if array else None))
    return fields


def fields_from_folder(folder: Path, rows: int, ref: str) -> list[Field]:
    """GGUF tokenizer fields for the Hugging Face tokenizer in `folder`, its vocabulary padded to `rows` entries
    (the embedding's row count)."""
    import gguf
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        spec = json.loads(tok.backend_tokenizer.to_str())
    except Exception as e:
        raise CheckpointError(f"model {ref!r}: no Hugging Face tokenizer loads from {folder} ({e}). Fix: give a "
                              "model folder with tokenizer.json, or take the tokenizer from another model.") from e
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise CheckpointError(f"model {ref!r}: its tokenizer is {model.get('type')} with a "
                              f"{(spec.get('decoder') or {}).get('type')} decoder; GGUF output supports byte-level "
                              "BPE tokenizers (Llama 3, Qwen2, SmolLM, GPT-2). Fix: write safetensors instead.")
    tokens, types = _vocabulary(tok, rows, ref)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    T = V = gguf.GGUFValueType
    out = [Field("tokenizer.ggml.model", "gpt2", T.STRING), Field("tokenizer.ggml.pre", _pre(spec), T.STRING),
           Field("tokenizer.ggml.tokens", tokens, T.ARRAY, V.STRING),
           Field("tokenizer.ggml.token_type", types, T.ARRAY, V.INT32),
           Field("tokenizer.ggml.merges", merges, T.ARRAY, V.STRING),
           Field("tokenizer.ggml.add_bos_token", bool(getattr(tok, "add_bos_token", False)), T.BOOL)]
    for role in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tok, f"{role}_token_id", None)
        if isinstance(token_id, int):
            key = "unknown" if role == "unk" else "padding" if role == "pad" else role
            out.append(Field(f"tokenizer.ggml.{key}_token_id", token_id, T.UINT32))
    if isinstance(tok.chat_template, str):
        out.append(Field("tokenizer.chat_template", tok.chat_template, T.STRING))
    return out


def _vocabulary(tok, rows: int, ref: str) -> tuple[list[str], list[int]]:
    import gguf

    by_id = {i: t for t, i in tok.get_vocab().items()}
    if by_id and max(by_id) >= rows:
        raise CheckpointError(f"model {ref!r}: its tokenizer has token id {max(by_id)} but the embedding has {rows} "
                              "rows. Fix: resize the embedding to the tokenizer (model.resize_token_embeddings).")
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(rows):
        if i not in by_id:
            tokens.append(PAD_TOKEN.format(i))
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            kind = (gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED) if i in added \
                else gguf.TokenType.NORMAL
            types.append(kind)
    return tokens, [int(t) for t in types]


def _pre(spec: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-split rule, found by its regex in transformers' table; "default"
    (GPT-2's rule) when the tokenizer splits some other way."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    patterns = set()

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Split" and isinstance(node.get("pattern"), dict):
                patterns.add(node["pattern"].get("Regex"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec.get("pre_tokenizer"))
    return next((name for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items() if regex in patterns), "default")
