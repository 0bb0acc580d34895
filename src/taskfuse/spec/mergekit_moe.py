"""Translate mergekit-moe YAML (mergekit 0.1.5's MoEMergeConfig) into taskfuse's MoE spec (programs/moe.py).

What maps: `base_model`, `experts[].source_model` / `positive_prompts` / `negative_prompts`, `experts_per_token`,
`dtype`, `gate_mode` and `architecture`. The routers are not mergekit's: `hidden` (and `hidden_avg`, `hidden_last`)
becomes taskfuse's hidden initialisation, the mean over the prompts' tokens of what each router reads (the layer's
post-attention norm output), where mergekit takes the residual stream entering the layer, at the last token or
averaged; `random` and `uniform_random` become taskfuse's seeded random router. What taskfuse has no counterpart for
is refused with the key named: `cheap_embed`, experts' `noise_scale` and `residual_scale`, `shared_experts`, the
DeepSeek output, and any key mergekit-moe does not define (mergekit ignores those silently).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError, collect
from ..io.checkpoint import Checkpoint
from ..methods.registry import suggest

KEYS = {"base_model", "experts", "gate_mode", "dtype", "experts_per_token", "shared_experts", "architecture"}
EXPERT_KEYS = {"source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale"}
GATE_MODES = {"hidden": "hidden", "hidden_avg": "hidden", "hidden_last": "hidden", "random": "random",
              "uniform_random": "random"}
# mergekit picks its output by the start of these names; taskfuse writes the one of the base's family
ARCHITECTURES = {"Mixtral": ("llama", "mistral"), "Qwen MoE": ("qwen2",), "Qwen3 MoE": ("qwen3",),
                 "DeepSeek MoE": ()}


def is_mergekit_moe(data: Any) -> bool:
    """mergekit-moe names the base `base_model` and each expert's model `source_model`; taskfuse's spec `base` and
    `path`."""
    if not isinstance(data, dict):
        return False
    experts = data.get("experts")
    return "base_model" in data or "gate_mode" in data or (
        isinstance(experts, list) and any(isinstance(e, dict) and "source_model" in e for e in experts))


def translate_mergekit_moe(cfg: dict, source: str) -> dict:
    where = f"{source}: mergekit-moe config"
    problems = [f"key {k!r} is not one of mergekit-moe's{suggest(k, KEYS)}" for k in cfg if k not in KEYS]
    gate_mode = cfg.get("gate_mode", "hidden")
    if gate_mode == "cheap_embed":
        problems.append("gate_mode 'cheap_embed' (routers from the prompts' token embeddings, the same in every "
                        "layer) has no taskfuse counterpart. Fix: gate_mode: hidden (taskfuse's routers from the "
                        "prompts' hidden states in each layer) or random")
    elif gate_mode not in GATE_MODES:
        problems.append(f"gate_mode {gate_mode!r} is not one of mergekit-moe's{suggest(str(gate_mode), GATE_MODES)}")
    if cfg.get("shared_experts"):
        problems.append("shared_experts: taskfuse writes Qwen2-MoE's shared expert silent, or as the base's MLP with "
                        "its gate at zero, not from another model with a gate from prompts. Fix: remove "
                        "shared_experts (a taskfuse MoE spec's `shared_expert: base` keeps the base's MLP)")
    base = cfg.get("base_model")
    if not isinstance(base, str) or not base:
        problems.append("base_model: give the base model's path or hub id (a string)")
    experts = cfg.get("experts")
    if not isinstance(experts, list) or not experts:
        problems.append("experts: give a list of {source_model, positive_prompts}")
        experts = []
    translated = [_expert(i, e, problems) for i, e in enumerate(experts)]
    collect(problems, SpecError, where)
    if cfg.get("architecture") is not None:
        _check_architecture(str(cfg["architecture"]), base, where)
    spec = {"base": base, "experts": translated, "router_init": GATE_MODES[gate_mode]}
    spec.update({k: cfg[k] for k in ("experts_per_token", "dtype") if cfg.get(k) is not None})
    return spec


def _expert(i: int, entry: Any, problems: list[str]) -> dict:
    if not isinstance(entry, dict):
        problems.append(f"experts[{i}]: give {{source_model, positive_prompts}}")
        return {}
    problems += [f"experts[{i}]: key {k!r} is not one of mergekit-moe's{suggest(k, EXPERT_KEYS)}"
                 for k in entry if k not in EXPERT_KEYS]
    problems += [f"experts[{i}].{k}: taskfuse takes each expert's MLP as it is. Fix: remove {k}"
                 for k in ("noise_scale", "residual_scale") if entry.get(k) is not None]
    if not isinstance(entry.get("source_model"), str):
        problems.append(f"experts[{i}].source_model: give the expert's path or hub id (a string)")
    if not entry.get("positive_prompts"):
        problems.append(f"experts[{i}]: no positive_prompts. Fix: give prompts like those this expert should "
                        "serve (taskfuse's MoE spec needs them for every router, a random one included)")
    expert = {"path": entry.get("source_model"), "positive_prompts": entry.get("positive_prompts")}
    if entry.get("negative_prompts"):
        expert["negative_prompts"] = entry["negative_prompts"]
    return expert


def _check_architecture(asked: str, base: str, where: str) -> None:
    """mergekit's `architecture` picks the output by the start of its name; taskfuse writes the MoE of the base's
    family, so the two must agree."""
    named = [name for name in ARCHITECTURES if name.lower().startswith(asked.lower())]
    model_type = (Checkpoint.open(base).config or {}).get("model_type")
    if not named or not any(model_type in ARCHITECTURES[name] for name in named):
        writes = next((name for name, types in ARCHITECTURES.items() if model_type in types), None)
        raise SpecError(f"{where}: architecture {asked!r} ({', '.join(named) or 'no mergekit output'}) is not what "
                        f"taskfuse writes from the base {base!r}, a {model_type!r} model"
                        + (f": {writes}" if writes else "") + ". Fix: remove architecture, or use a base of that "
                        "family.")
