"""EMR-Merging (Huang et al. 2024, "EMR-Merging: Tuning-Free High-Performance Model Merging", arXiv:2405.17461):
one elected task vector shared by all tasks, and per task a binary mask and a scalar rescaler; serving task t takes
θ₀ + λ_t·(M_t ⊙ τ_uni). It needs the task's identity at inference (a router that knows the task), so the benchmark
lists it with the routed rows, not the static ones."""
from __future__ import annotations

import torch


def elect(deltas: torch.Tensor) -> torch.Tensor:
    """τ_uni: the sign of Σ_t τ_t, and per entry the largest |τ_t| among the tasks that agree with it. (T, *S) → S"""
    sign = torch.sign(deltas.sum(0))
    agreeing = (torch.sign(deltas) == sign) & (sign != 0)
    return sign * (deltas.abs() * agreeing).amax(0)


def task_models(base: dict[str, torch.Tensor], experts: dict[str, dict[str, torch.Tensor]],
                names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Per task, `base` with every tensor in `names` replaced by θ₀ + λ_t·M_t⊙τ_uni: M_t = [τ_t·τ_uni > 0], and
    one rescaler per task over the whole model, λ_t = Σ|τ_t| / Σ|M_t⊙τ_uni| (the paper's Eq. 4-5), so each task's
    vector keeps its total magnitude."""
    tasks = list(experts)
    unified, masks = {}, {}
    total = torch.zeros(len(tasks), dtype=torch.float64)
    kept = torch.zeros(len(tasks), dtype=torch.float64)
    for name in names:
        deltas = torch.stack([experts[t][name].float() - base[name].float() for t in tasks])  # (T, *S)
        unified[name] = elect(deltas)
        masks[name] = (deltas * unified[name]) > 0
        total += deltas.abs().flatten(1).sum(1).double()
        kept += (masks[name] * unified[name]).abs().flatten(1).sum(1).double()
    rescale = torch.where(kept > 0, total / kept.clamp_min(1e-30), torch.zeros_like(kept)).float()
    models = {}
    for i, task in enumerate(tasks):
        state = dict(base)
        for name in names:
            state[name] = (base[name].float() + rescale[i] * masks[name][i] * unified[name]).to(base[name].dtype)
        models[task] = state
    return models
