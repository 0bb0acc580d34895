"""The Hugging Face files around the weights: config, tokenizer, generation config, model card, index."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
    "chat_template.json",
)
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def write_config(source: dict | None, dst: Path, dtype: torch.dtype, updates: dict) -> bool:
    """Write the source model's config.json (parsed when it was opened) with the output dtype and the planned
    updates (e.g. stacked layer count); nothing if the source has no config."""
    if source is None:
        return False
    config = dict(source)
    # transformers 5 reads "dtype", 4.x "torch_dtype": keep whichever the source used, default to the new name.
    key = "torch_dtype" if "torch_dtype" in config and "dtype" not in config else "dtype"
    config[key] = DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
    config.update(updates)
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return True


def copy_side_files(config_src: Path | None, tokenizer_src: Path | None, dst: Path) -> list[str]:
    """Copy tokenizer files and generation_config.json; returns the names copied."""
    copied = []
    for src, names in ((tokenizer_src, TOKENIZER_FILES), (config_src, ("generation_config.json",))):
        for name in names if src else ():
            if (src / name).exists():
                shutil.copyfile(src / name, dst / name)
                copied.append(name)
    return copied


def write_index(dst: Path, weight_map: dict[str, str], total_size: int) -> None:
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
