"""A model's statistics on its task's data (RegMean's Gram matrices, Fisher diagonals), as a folder of ours.

The folder holds `statistics.safetensors` (one tensor per model tensor it describes, under the same name) whose
header metadata names the kind, and `statistics.json`, the record of which model and which data produced them.
A spec names the folder (or the .safetensors file itself) in a model's `statistics:` entry.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .output import staged_output

TENSORS = "statistics.safetensors"
RECORD = "statistics.json"
KIND_KEY = "taskfuse_statistics"


def save_statistics(out: str | Path, tensors: dict[str, torch.Tensor], kind: str, record: dict) -> Path:
    """Write the folder atomically (staged, then renamed); returns its path."""
    out = Path(out)
    with staged_output(out, "statistics") as stage:
        save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, stage / TENSORS,
                  metadata={KIND_KEY: kind})
        (stage / RECORD).write_text(json.dumps({"kind": kind, **record}, indent=2) + "\n")
    return out


def statistics_file(ref: str | Path) -> Path:
    """The .safetensors file a `statistics:` entry names: the file itself, or the one in the folder."""
    path = Path(ref).expanduser()
    return path / TENSORS if path.is_dir() else path


def statistics_kind(ref: str | Path, owner: str) -> str:
    """The kind of statistics stored at `ref` (for the model `owner`); a typed error if it is not such a file."""
    path = statistics_file(ref)
    fix = "Fix: point `statistics:` at a folder written by `taskfuse statistics`."
    if not path.is_file():
        raise CheckpointError(f"statistics of {owner}: {path} does not exist. {fix}")
    try:
        with safe_open(str(path), "pt") as f:
            kind = (f.metadata() or {}).get(KIND_KEY)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"statistics of {owner}: {path} is not a readable safetensors file ({e}). {fix}") from None
    if kind is None:
        raise CheckpointError(f"statistics of {owner}: {path} does not say what it holds (no {KIND_KEY!r} in its "
                              f"header). {fix}")
    return kind


def read_record(ref: str | Path) -> dict:
    """The record beside the tensors (which model, which data); empty for a bare .safetensors file."""
    path = statistics_file(ref).parent / RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
