"""How alike the experts' task vectors are: the statistic the docs use to explain TIES and Model Stock results."""
from __future__ import annotations

import itertools
from pathlib import Path

import torch
from safetensors.torch import load_file


def task_vector_cosines(base_dir: Path, expert_dirs: list[Path]) -> dict:
    """Pairwise cosine similarity of the experts' task vectors (θ_t − θ₀), over the whole model and per tensor
    (the per-tensor mean over pairs is what Model Stock's interpolation uses). Tensors no expert moved (the frozen
    vocabulary table) are left out of both."""
    base = load_file(base_dir / "model.safetensors")
    experts = [load_file(d / "model.safetensors") for d in expert_dirs]
    names = [n for n, t in base.items() if t.is_floating_point() and all(n in e for e in experts)]
    pairs = list(itertools.combinations(range(len(experts)), 2))
    dots = torch.zeros(len(pairs), dtype=torch.float64)
    norms = torch.zeros(len(experts), dtype=torch.float64)
    per_tensor = []
    for name in names:
        deltas = torch.stack([(e[name].double() - base[name].double()).reshape(-1) for e in experts])
        tensor_norms = deltas.norm(dim=1)
        if not bool((tensor_norms > 0).all()):
            continue
        gram = deltas @ deltas.T
        dots += torch.tensor([gram[i, j] for i, j in pairs])
        norms += tensor_norms ** 2
        cosines = [gram[i, j] / (tensor_norms[i] * tensor_norms[j]) for i, j in pairs]
        per_tensor.append(float(torch.tensor(cosines).mean()))
    whole = dots / torch.tensor([(norms[i] * norms[j]).sqrt() for i, j in pairs])
    return {"pairs": len(pairs), "tensors": len(per_tensor),
            "whole_model": {"mean": float(whole.mean()), "min": float(whole.min()), "max": float(whole.max())},
            "per_tensor_mean": {"mean": sum(per_tensor) / len(per_tensor), "min": min(per_tensor),
                                "max": max(per_tensor)}}
