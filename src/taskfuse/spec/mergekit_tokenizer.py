"""mergekit's tokenizer settings as a taskfuse spec's `tokenizer_from` and `pad_vocab_to_multiple_of`."""
from __future__ import annotations


def tokenizer_source(source, base, spec: dict) -> None:
    """mergekit's `tokenizer_source`: base, union or a model path."""
    if source is None:
        return
    spec["tokenizer_from"] = base if source == "base" and base else source  # "union" and model paths as they are


def tokenizer_block(block, base, spec: dict, problems: list[str]) -> None:
    """mergekit's `tokenizer:` mapping: source (base, union or a model) and pad_to_multiple_of."""
    if block is None:
        return
    if not isinstance(block, dict) or set(block) - {"source", "pad_to_multiple_of"}:
        problems.append("tokenizer: expected a mapping with source and pad_to_multiple_of (per-token `tokens` "
                        "rules are not supported)")
        return
    tokenizer_source(block.get("source"), base, spec)
    if block.get("pad_to_multiple_of") is not None:
        spec["pad_vocab_to_multiple_of"] = block["pad_to_multiple_of"]
