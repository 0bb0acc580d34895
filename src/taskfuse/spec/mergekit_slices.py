"""mergekit's `slices:` whose slices merge several models (the form of the widely copied SLERP recipe) as a
whole-model taskfuse spec.

mergekit merges each slice's sources layer by layer and evaluates gradients over each slice's own layers: layer j of
a slice of n layers sits at j/(n-1) (a one-layer slice at 1); the tensors outside the layer stack sit at 0 and take
the first slice's settings (embeddings) or the last one's (final norm, head). taskfuse merges layer i of every model
into layer i of the output, so what it takes is the case where that is what the slices describe: every slice lists
the same models in the same order, each source with the same layer_range, and the slices run on from layer 0. The
spec then records the depth they cover, and a merge of models with another depth is refused before anything is
written (programs/depth_check.py). One slice is a models-form config with the slice's settings in front of the
config's; each further slice adds per-layer overrides with its settings evaluated at each of its layers, listing
the layer's tensors by name from the reference model (the base, else the first model), so that a layer is the one
the plan's own schedules see and a filter matches as mergekit's does, as text anywhere in the name.
"""
from __future__ import annotations

import glob
from typing import Any

from ..plan.schedule import layer_index
from .mergekit_rules import Rule, at_position, is_rule_list, reachable, rules_of

SLICE_KEYS = {"sources", "parameters"}
SOURCE_KEYS = {"model", "layer_range", "parameters"}


def is_merged(slices: list[dict]) -> bool:
    return any(len(sl.get("sources") or []) > 1 for sl in slices)


def slice_problems(slices: list[dict], method: str) -> list[str]:
    """Why these slices are not a whole-model merge of the same models, slice by slice, or [] when they are."""
    problems = []
    if method == "passthrough":
        return ["slices: passthrough takes one source per slice (layer stacking); a slice with several sources "
                "merges them. Fix: choose a merge method, or give each slice one source."]
    first_models = [src.get("model") for src in slices[0].get("sources") or []]
    expected_start = 0
    for i, sl in enumerate(slices):
        problems += [f"slices[{i}]: key {k!r} is not supported" for k in sorted(set(sl) - SLICE_KEYS)]
        sources = sl.get("sources") or []
        problems += [f"slices[{i}].sources[{j}]: key {k!r} is not supported"
                     for j, src in enumerate(sources) for k in sorted(set(src) - SOURCE_KEYS)]
        if [src.get("model") for src in sources] != first_models:
            problems.append(f"slices[{i}]: its sources name other models than slices[0]'s ({first_models}); "
                            "taskfuse merges the same models in every layer. Fix: list the same models, in the same "
                            "order, in every slice.")
            continue
        ranges = {tuple(src["layer_range"]) for src in sources}
        if len(ranges) != 1:
            problems.append(f"slices[{i}]: its sources take different layer ranges {sorted(ranges)}; taskfuse merges "
                            "layer i of every model into layer i. Fix: give every source of a slice the same "
                            "layer_range.")
            continue
        start, end = ranges.pop()
        if start != expected_start or end <= start:
            problems.append(f"slices[{i}]: layer_range [{start}, {end}] should start at layer {expected_start} and "
                            "end after it: merged slices run on from layer 0, each from where the one before ended.")
        expected_start = end
    return problems


def as_models_config(cfg: dict) -> dict:
    """The models-form config that the first slice describes: its sources as models (with their settings), its
    settings in front of the config's. The depth and the per-layer overrides are added by mergekit.py's
    `_merged_slices`."""
    first = cfg["slices"][0]
    out = {k: v for k, v in cfg.items() if k != "slices"}
    out["models"] = [{"model": src["model"], **({"parameters": src["parameters"]} if src.get("parameters") else {})}
                     for src in first["sources"]]
    out["parameters"] = chained(first.get("parameters") or {}, cfg.get("parameters") or {})
    return out


def chained(first: dict, then: dict) -> dict:
    """Settings where `first`'s rules are tried before `then`'s, as mergekit falls back from a source or slice to
    the config; a key whose first catch-all is reached before any filter stays a plain value."""
    out = {}
    for key in dict.fromkeys([*first, *then]):
        if key not in first or key not in then or key in ("normalize", "rescale"):
            out[key] = first.get(key, then.get(key))
            continue
        rules = reachable(rules_of(first[key]) + rules_of(then[key]))
        out[key] = rules[0][1] if len(rules) == 1 and rules[0][0] is None else [_as_rule(r) for r in rules]
    return out


def _as_rule(rule: Rule) -> dict:
    part, value = rule
    return {"value": value} if part is None else {"filter": part, "value": value}


def depth(slices: list[dict]) -> int:
    return slices[-1]["sources"][0]["layer_range"][1]


def evaluated(settings: dict, position: float) -> dict:
    """Every gradient in `settings` (plain or inside a rule) replaced by its value at `position` of its slice."""
    out = {}
    for key, value in settings.items():
        if is_rule_list(value):
            out[key] = [{**rule, "value": at_position(rule["value"], position)} for rule in value]
        else:
            out[key] = at_position(value, position)
    return out


def tensors_by_layer(names: list[str]) -> dict[int, list[str]]:
    """The reference model's tensor names by the layer the plan gives them (plan/schedule.py's `layer_index`: the
    first numbered block, so T5's `block.3.layer.0` is layer 3)."""
    by_layer: dict[int, list[str]] = {}
    for name in names:
        index = layer_index(name)
        if index is not None:
            by_layer.setdefault(index, []).append(name)
    return by_layer


def layer_tensors(by_layer: dict[int, list[str]], layer: int, name_part: str | None = None) -> list[str]:
    """Layer `layer`'s tensors (those containing `name_part`, where given, as mergekit's filters match), by exact
    name: globs of a block word and number would also catch a nested block's number (`layer.0` inside any T5
    block) and could not tell a filter from the layer's own name."""
    return [glob.escape(n) for n in by_layer.get(layer, []) if name_part is None or name_part in n]


def positions(start: int, end: int) -> list[float]:
    """Each layer's position along its slice, as mergekit evaluates gradients (a one-layer slice at 1)."""
    n = end - start
    return [1.0] if n == 1 else [j / (n - 1) for j in range(n)]


def slice_settings(cfg: dict) -> list[tuple[int, int, dict]]:
    """(start, end, the settings its layers read: the slice's in front of the config's) for every slice."""
    out = []
    for sl in cfg["slices"]:
        start, end = sl["sources"][0]["layer_range"]
        out.append((start, end, chained(sl.get("parameters") or {}, cfg.get("parameters") or {})))
    return out


def source_settings(cfg: dict) -> list[list[dict]]:
    """Each slice's sources' settings, in model order."""
    return [[src.get("parameters") or {} for src in sl["sources"]] for sl in cfg["slices"]]


def source_problems(cfg: dict) -> list[str]:
    """Sources' own settings that would differ from slice to slice: only plain weights may (per-layer weights)."""
    per_slice = source_settings(cfg)
    problems = [f"slices[{i}].sources[{j}].parameters.{key}: per-layer or filtered settings of a source are not "
                "supported across several slices (taskfuse would spread them over the whole depth, mergekit over "
                "each slice). Fix: give them in the slice's `parameters`."
                for i, sources in enumerate(per_slice) for j, settings in enumerate(sources)
                for key, value in settings.items() if isinstance(value, list)]
    for j, first in enumerate(per_slice[0]):
        for i, settings in enumerate((sources[j] for sources in per_slice[1:]), 1):
            changed = sorted(k for k in {*first, *settings} if first.get(k) != settings.get(k))
            if [k for k in changed if k != "weight"] or not all(
                    isinstance(s.get("weight", 1.0), (int, float)) for s in (first, settings)):
                problems.append(f"slices[{i}].sources[{j}].parameters: differ from slices[0]'s ({changed}); a source's "
                                "own settings may change from slice to slice only in a plain `weight`. Fix: give the "
                                "slice's setting in the slice's `parameters`, or the same in every slice.")
    if per_slice[0] != per_slice[-1] and not problems:
        problems.append("slices[-1].sources: weights differ from slices[0]'s; mergekit merges the embeddings with the "
                        "first slice's and the final norm and head with the last slice's, which taskfuse cannot tell "
                        "apart by name. Fix: the same weights in the first and last slices.")
    return problems


def per_layer_weights(cfg: dict, models_in_spec: list[str], default_weight: float,
                      by_layer: dict[int, list[str]]) -> list[dict[str, Any]]:
    """Overrides giving the sources' plain weights of each slice after the first, per layer, where they differ."""
    per_slice = source_settings(cfg)
    names = [src["model"] for src in cfg["slices"][0]["sources"]]
    overrides = []
    for (start, end, _), settings in zip(slice_settings(cfg)[1:], per_slice[1:]):
        if settings == per_slice[0]:
            continue
        weight = {name: s.get("weight", default_weight) for name, s in zip(names, settings)}
        overrides += [{"tensors": tensors, "weights": [weight[m] for m in models_in_spec]}
                      for tensors in (layer_tensors(by_layer, layer) for layer in range(start, end)) if tensors]
    return overrides
