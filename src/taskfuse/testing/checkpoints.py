"""Tiny but real Hugging Face checkpoints (Llama-style and BERT-style) built from transformers configs.

Used by the demo and the tests: a base model and fine-tunes that differ from it by seeded perturbations, saved
with save_pretrained exactly as the hub would serve them.
"""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_config(arch: str, vocab_size: int = 128, tie: bool = False):
    from transformers import BertConfig, LlamaConfig

    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           tie_word_embeddings=tie)
    if arch == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=64)
    raise ValueError(f"unknown tiny architecture {arch!r}; use 'llama' or 'bert'")


def build_model(arch: str, seed: int, vocab_size: int = 128, tie: bool = False):
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(arch, vocab_size, tie)
    cls = AutoModelForCausalLM if arch == "llama" else AutoModel
    return cls.from_config(config).eval()


def perturb(model, seed: int, scale: float = 0.02, density: float = 1.0):
    """A 'fine-tune': every floating parameter moved by seeded Gaussian noise (on a random subset if density<1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            if density < 1:
                noise *= torch.rand(p.shape, generator=g) < density
            p.add_(noise)
    return model


def save(model, path: Path, dtype: torch.dtype = torch.float32, max_shard_size: str | int = "5GB") -> Path:
    path = Path(path)
    model.to(dtype).save_pretrained(path, max_shard_size=max_shard_size)
    return path


def build_family(root: Path, arch: str = "llama", n_models: int = 2, dtype: torch.dtype = torch.float32,
                 max_shard_size: str | int = "5GB", tie: bool = False) -> tuple[Path, list[Path]]:
    """A base and `n_models` fine-tunes of it under `root`; returns (base_dir, [fine_tune_dirs])."""
    root = Path(root)
    base = save(build_model(arch, 0, tie=tie), root / "base", dtype, max_shard_size)
    tunes = []
    for i in range(n_models):
        model = perturb(build_model(arch, 0, tie=tie), seed=100 + i)
        tunes.append(save(model, root / f"ft{i}", dtype, max_shard_size))
    return base, tunes


def tagged_tensors(checkpoints: dict[str, Path]) -> dict[str, torch.Tensor]:
    """Every tensor of each checkpoint as '<tag>/<name>': a whole family in one reference-fixture file."""
    from ..io.checkpoint import Checkpoint

    tensors = {}
    for tag, path in checkpoints.items():
        ck = Checkpoint.open(path)
        tensors.update({f"{tag}/{n}": ck.read(n) for n in ck.tensors})
    return tensors


def checkpoints_from_tagged(tensors: dict[str, torch.Tensor], config: Path, root: Path) -> dict[str, Path]:
    """The inverse of tagged_tensors: one model.safetensors checkpoint (with `config`) per tag under `root`."""
    from safetensors.torch import save_file

    paths = {}
    for tag in sorted({k.split("/", 1)[0] for k in tensors}):
        (root / tag).mkdir(parents=True)
        save_file({k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(tag + "/")},
                  root / tag / "model.safetensors", metadata={"format": "pt"})
        (root / tag / "config.json").write_text(config.read_text())
        paths[tag] = root / tag
    return paths


def save_as_bin(sources: list[Path], root: Path, legacy: bool = False) -> list[Path]:
    """Copies of `sources` as pytorch_model.bin checkpoints (with `legacy`, in the pre-1.6 non-zip format that many
    old hub checkpoints use)."""
    from ..io.checkpoint import Checkpoint

    copies = []
    for src in sources:
        ck = Checkpoint.open(src)
        (root / src.name).mkdir(parents=True)
        torch.save({n: ck.read(n) for n in ck.tensors}, root / src.name / "pytorch_model.bin",
                   _use_new_zipfile_serialization=not legacy)
        (root / src.name / "config.json").write_text((src / "config.json").read_text())
        copies.append(root / src.name)
    return copies
