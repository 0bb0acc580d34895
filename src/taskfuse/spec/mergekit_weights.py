"""mergekit's per-model weights given per layer (a gradient, `weight: [0, 0.3, 0.7, 1]`) or per tensor (filtered
rules, `weight: [{filter: mlp, value: 0.5}, {value: 0}]`), both in mergekit's own README example, as taskfuse
overrides that give every tensor its models' weights.

A taskfuse model's `weight` is one number, and an override's `weights` replace all the models' weights of the
tensors it matches. Combining several models' filters by globs would need one glob per combination of filters, and
filters may overlap; so instead the translation reads the tensor names of the reference model (the base, else the
first model), which is where the plan takes its tensors from, and evaluates mergekit's rule for each: a model's
first matching rule, then the config's, a gradient at the tensor's position along the depth (plan/schedule.py,
outside the layer stack 0, as mergekit). Tensors that end up with the same weights share one override, listed by
exact name. The spec records the depth it was evaluated for (`depth`), which the merge checks.
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from ..plan.schedule import depth_position
from .mergekit_rules import at_position, reachable, rules_of

DEFAULT_WEIGHT = 1.0  # a tensor no rule gives a weight: taskfuse's default weight, as for a model without one


def is_plain(setting: Any) -> bool:
    return isinstance(setting, (int, float)) and not isinstance(setting, bool)


def weight_of(name: str, setting: Any, position: float) -> float:
    """mergekit's weight for tensor `name`: the first rule whose filter it contains, a gradient at `position`."""
    for part, value in reachable(rules_of(setting)):
        if part is None or part in name:
            return float(at_position(value, position))
    return DEFAULT_WEIGHT


def reference_model(cfg: dict, models: list[dict]) -> str:
    return cfg.get("base_model") or models[0]["path"]


def tensor_names(ref: str, source: str) -> tuple[list[str], int]:
    """The reference model's tensor names and depth, opened as the plan opens it (relative to the spec's folder)."""
    from ..io.checkpoint import Checkpoint
    from ..plan.planner import _num_layers  # the depth the plan interpolates schedules over

    folder = Path(source).parent if Path(source).is_file() else None
    ckpt = Checkpoint.open(ref, base_dir=folder)
    return list(ckpt.tensors), _num_layers(ckpt)


def weight_overrides(settings: list[Any], names: list[str], depth: int) -> tuple[list[float], list[dict]]:
    """Each model's plain weight (the weights most tensors take) and overrides for the tensors whose weights differ;
    `settings` holds each spec model's mergekit weight setting, the config's rules already chained after its own."""
    groups: dict[tuple[float, ...], list[str]] = {}
    for name in names:
        position = depth_position(name, depth)
        groups.setdefault(tuple(weight_of(name, s, position) for s in settings), []).append(name)
    common = max(groups, key=lambda w: len(groups[w]))
    overrides = [{"tensors": [glob.escape(n) for n in members], "weights": list(weights)}
                 for weights, members in groups.items() if weights != common]
    return list(common), overrides
