"""A model's tokenizer as GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).

From a GGUF file the fields are copied as they are. From a Hugging Face folder they are built from the tokenizer
transformers loads, for the two kinds GGUF has a model for:
- byte-level BPE (Llama 3, Qwen2, SmolLM, GPT-2 style) as `gpt2`: vocabulary and merges stored verbatim;
- SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma) as `llama`: pieces, their types (byte
  tokens `<0xNN>`, the unknown token, control and user-defined tokens), the merges, and scores. A tokenizer.json
  keeps no SentencePiece scores, and llama.cpp merges by score (the highest-scoring piece an adjacent pair forms),
  so each piece scores minus the rank of the first merge that forms it; pieces no merge forms (characters, bytes,
  control tokens) score below every merge, in id order. Decided here; it makes score order equal merge order.
Either way, the fields are checked before anything is written: transformers' own GGUF tokenizer builder rebuilds a
tokenizer from them, and it must split a set of probe texts exactly as the folder's tokenizer does.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

PAD_TOKEN = "[PAD{}]"  # rows of a padded embedding that no token uses
BYTE_TOKEN = re.compile(r"^<0x[0-9A-F]{2}>$")  # SentencePiece's byte-fallback pieces
# texts the rebuilt tokenizer must split as the original does: leading and repeated blanks, newlines, tabs, digits,
# accents, characters only byte fallback spells, punctuation runs, and special tokens spliced in
PROBES = ["Hello world, it is 1234 o'clock.", "  two leading blanks\tand a tab\n\nnew lines ", "déjà vu, naïve café",
          "emoji 😀 and 漢字 need byte fallback", "x=1;y=[2,3]", "a  b   c    d", "\n", " "]


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


def fields_from_folder(folder: Path, rows: int, ref: str, architecture: str) -> list[Field]:
    """GGUF tokenizer fields for the Hugging Face tokenizer in `folder`, its vocabulary padded to `rows` entries
    (the embedding's row count), checked to rebuild as the same tokenizer for a GGUF of `architecture`."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        spec = json.loads(tok.backend_tokenizer.to_str())
    except Exception as e:
        raise CheckpointError(f"model {ref!r}: no Hugging Face tokenizer loads from {folder} ({e}). Fix: give a "
                              "model folder with tokenizer.json, or take the tokenizer from another model.") from e
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") == "BPE" and decoder.get("type") == "ByteLevel":
        fields = _byte_level_fields(tok, spec, rows, ref)
    elif model.get("type") == "BPE" and model.get("byte_fallback"):
        fields = _sentencepiece_fields(tok, spec, rows, ref)
    else:
        raise CheckpointError(f"model {ref!r}: its tokenizer is {model.get('type')} with a {decoder.get('type')} "
                              "decoder; GGUF output supports byte-level BPE (Llama 3, Qwen2, SmolLM, GPT-2) and "
                              "SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma). Fix: write "
                              "safetensors instead.")
    fields += _special_fields(tok)
    _check_rebuilds(tok, fields, architecture, ref)
    return fields


def _byte_level_fields(tok, spec: dict, rows: int, ref: str) -> list[Field]:
    import gguf

    tokens, types = _vocabulary(tok, rows, ref)
    T = V = gguf.GGUFValueType
    return [Field("tokenizer.ggml.model", "gpt2", T.STRING), Field("tokenizer.ggml.pre", _pre(spec, ref), T.STRING),
            Field("tokenizer.ggml.tokens", tokens, T.ARRAY, V.STRING),
            Field("tokenizer.ggml.token_type", types, T.ARRAY, V.INT32),
            Field("tokenizer.ggml.merges", _merges(spec), T.ARRAY, V.STRING)]


def _sentencepiece_fields(tok, spec: dict, rows: int, ref: str) -> list[Field]:
    import gguf

    tokens, types = _vocabulary(tok, rows, ref)
    merges = _merges(spec)
    first_formed: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        first_formed.setdefault(merge.replace(" ", ""), rank)
    # a piece no merge forms scores below every merge, keeping id order
    scores = [-float(first_formed.get(token, len(merges) + i)) for i, token in enumerate(tokens)]
    unk = tok.unk_token_id
    for i, token in enumerate(tokens):
        if BYTE_TOKEN.match(token) and types[i] == int(gguf.TokenType.NORMAL):
            types[i] = int(gguf.TokenType.BYTE)
        if i == unk:
            types[i] = int(gguf.TokenType.UNKNOWN)
    T = V = gguf.GGUFValueType
    return [Field("tokenizer.ggml.model", "llama", T.STRING),
            Field("tokenizer.ggml.tokens", tokens, T.ARRAY, V.STRING),
            Field("tokenizer.ggml.scores", scores, T.ARRAY, V.FLOAT32),
            Field("tokenizer.ggml.token_type", types, T.ARRAY, V.INT32),
            Field("tokenizer.ggml.merges", merges, T.ARRAY, V.STRING),
            Field("tokenizer.ggml.add_space_prefix", _adds_space_prefix(tok), T.BOOL)]


def _special_fields(tok) -> list[Field]:
    """Special token ids, whether begin and end tokens are added, and the chat template. Whether they are added is
    read from what the tokenizer does (its `add_bos_token` attribute is not always set on a loaded tokenizer whose
    post-processor adds one)."""
    import gguf

    T = gguf.GGUFValueType
    plain, full = tok("a", add_special_tokens=False).input_ids, tok("a").input_ids
    adds_bos = tok.bos_token_id is not None and full[:1] == [tok.bos_token_id] and plain[:1] != [tok.bos_token_id]
    adds_eos = tok.eos_token_id is not None and full[-1:] == [tok.eos_token_id] and plain[-1:] != [tok.eos_token_id]
    out = [Field("tokenizer.ggml.add_bos_token", adds_bos, T.BOOL),
           Field("tokenizer.ggml.add_eos_token", adds_eos, T.BOOL)]
    for role in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tok, f"{role}_token_id", None)
        if isinstance(token_id, int):
            key = "unknown" if role == "unk" else "padding" if role == "pad" else role
            out.append(Field(f"tokenizer.ggml.{key}_token_id", token_id, T.UINT32))
    if isinstance(tok.chat_template, str):
        out.append(Field("tokenizer.chat_template", tok.chat_template, T.STRING))
    return out


def _merges(spec: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in (spec.get("model") or {}).get("merges", [])]


def _adds_space_prefix(tok) -> bool:
    """Whether the tokenizer writes a "▁" before the text (Llama 2, Mistral) or not (Gemma): llama.cpp's
    `add_space_prefix`, read from what the tokenizer does to a word."""
    return tok.backend_tokenizer.encode("a", add_special_tokens=False).tokens[:1] in (["\u2581a"], ["\u2581"])


def _check_rebuilds(tok, fields: list[Field], architecture: str, ref: str) -> None:
    """transformers rebuilds a GGUF's tokenizer from its fields with a class chosen by the tokenizer model and the
    architecture, bringing that class's own normaliser and splitting rules; refuse fields it would rebuild as a
    tokenizer that splits any probe text differently from the folder's."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (GGUF_TOKENIZER_MAPPING,
                                                                            convert_gguf_tokenizer)
    except ImportError:  # a transformers without this builder reads no GGUF tokenizer to compare with
        return
    names = GGUF_TOKENIZER_MAPPING["tokenizer"]
    as_read = {names[f.key[len("tokenizer."):]]: f.value for f in fields
               if f.key.startswith("tokenizer.") and f.key[len("tokenizer."):] in names}
    specials = [t for t in tok.all_special_tokens if t]
    texts = PROBES + [f"{specials[0]}{PROBES[0]}{specials[-1]} {PROBES[2]}"] if specials else PROBES
    try:
        rebuilt, _ = convert_gguf_tokenizer(architecture, as_read)
    except Exception as e:
        raise CheckpointError(f"model {ref!r}: transformers cannot rebuild its tokenizer from GGUF fields ({e}). "
                              "Fix: write safetensors instead.") from e
    for text in texts:
        want = tok(text, add_special_tokens=False).input_ids
        got = rebuilt.encode(text, add_special_tokens=False).ids
        if want != got:
            raise CheckpointError(
                f"model {ref!r}: its tokenizer would not survive GGUF: read back as a {architecture} GGUF it splits "
                f"{text!r} into {tok.convert_ids_to_tokens(got[:12])} instead of {tok.convert_ids_to_tokens(want[:12])} (its normaliser or pre-split rule is not the one "
                "GGUF readers give this tokenizer kind). Fix: write safetensors instead.")


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


def _pre(spec: dict, ref: str) -> str:
    """llama.cpp's name for the tokenizer's pre-split rule: found by its regex in transformers' table, or "gpt-2"
    for a plain byte-level pre-tokenizer (GPT-2's regex, built in). llama.cpp splits an unnamed rule by its
    "default" rule, which splits punctuation apart first (" -" becomes " " and "-"): such a tokenizer is refused."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    patterns, byte_level_regex = set(), False

    def walk(node):
        nonlocal byte_level_regex
        if isinstance(node, dict):
            if node.get("type") == "Split" and isinstance(node.get("pattern"), dict):
                patterns.add(node["pattern"].get("Regex"))
            if node.get("type") == "ByteLevel" and node.get("use_regex", True):
                byte_level_regex = True
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec.get("pre_tokenizer"))
    named = next((name for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items() if regex in patterns), None)
    if named is None and byte_level_regex and not patterns:
        named = "gpt-2"  # llama.cpp's name for GPT-2's rule
    if named is None:
        raise CheckpointError(f"model {ref!r}: its tokenizer splits text by a rule llama.cpp has no name for "
                              f"({sorted(str(p) for p in patterns) or 'no regex'}); llama.cpp would split it by its "
                              "default rule instead and read other tokens. Fix: write safetensors instead.")
    return named
