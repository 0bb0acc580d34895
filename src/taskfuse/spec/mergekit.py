"""Translate mergekit YAML configs into taskfuse specs.

Only the documented semantics are mapped (mergekit's docs and config schema); anything else is an error naming the
key, never ignored. Conventions differ from the papers and PEFT, so each mergekit method maps to our method plus
the variant switches that reproduce mergekit's arithmetic (sign election on weighted deltas, normalisation by
the agreeing weights, L1-norm rescaling after random drops).
"""
from __future__ import annotations

from typing import Any

from ..errors import SpecError, collect
from ..methods.registry import suggest
from .mergekit_rules import filter_glob, rules_of, split
from .mergekit_slices import (as_models_config, chained, depth, evaluated, is_merged, layer_tensors, per_layer_weights,
                              positions, slice_problems, slice_settings, source_problems, tensors_by_layer)
from .mergekit_tokenizer import tokenizer_block, tokenizer_source
from .mergekit_weights import is_plain, reference_model, tensor_names, weight_overrides

_TIES_LIKE = {"elect_on": "weighted"}
# mergekit name -> (taskfuse method, fixed params that reproduce mergekit, its default normalize, default rescale)
METHODS: dict[str, tuple[str, dict, bool | None, bool | None]] = {
    "linear": ("linear", {}, True, None),
    "task_arithmetic": ("task_arithmetic", {}, False, None),
    "ties": ("ties", _TIES_LIKE, True, None),
    "dare_ties": ("dare_ties", _TIES_LIKE, False, True),
    "dare_linear": ("dare_linear", {}, False, True),
    "breadcrumbs": ("breadcrumbs", {}, False, None),
    "breadcrumbs_ties": ("breadcrumbs_ties", _TIES_LIKE, False, None),
    "della": ("della", _TIES_LIKE, True, True),
    "della_linear": ("della_linear", {}, False, True),
    "slerp": ("slerp", {}, None, None),
    "model_stock": ("model_stock", {}, None, None),
    "karcher": ("karcher", {}, None, None),
    "sce": ("sce", {"selection": "task_vectors", "coefficient_floor": 1e-6}, None, None),
    "nuslerp": ("nuslerp", {}, None, None),  # nuslerp_task_vectors where a base_model is given
    "multislerp": ("multislerp", {}, None, None),  # multislerp_task_vectors where a base_model is given
    "ram": ("ram", {}, None, None),
    "ramplus_tl": ("ram", {"r": 0.1}, None, None),
    "nearswap": ("nearswap", {}, None, None),
    "arcee_fusion": ("arcee_fusion", {}, None, None),
    "passthrough": ("passthrough", {}, None, None),
}
TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source", "tokenizer",
            "slices", "chat_template"}
# Plain renames of mergekit parameter names; weight/normalize/rescale are handled separately.
RENAME = {"density": "density", "gamma": "gamma", "epsilon": "epsilon", "lambda": "scale", "t": "t",
          "max_iter": "max_iter", "tol": "tol", "select_topk": "select_topk", "normalize_weights": "normalize_weights",
          "eps": "eps", "r": "r", "alpha": "alpha"}
NO_EFFECT = {"int8_mask"}  # changes the mask's storage dtype only, never the result


def translate_mergekit(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    collect(_shape_problems(cfg), SpecError, f"{source}: mergekit config")
    problems = [f"mergekit key {k!r} is not supported{suggest(k, TOP_KEYS)}" for k in cfg if k not in TOP_KEYS]
    name = cfg.get("merge_method")
    if name not in METHODS:
        problems.append(f"mergekit merge_method {name!r} is not supported{suggest(str(name), METHODS)}; "
                        f"supported: {', '.join(sorted(METHODS))}")
        collect(problems, SpecError, f"{source}: mergekit config")
    method, fixed, default_norm, default_rescale = METHODS[name]
    if method in ("nuslerp", "multislerp") and cfg.get("base_model"):
        method += "_task_vectors"  # mergekit's nuslerp and multislerp interpolate task vectors where it has a base
    if cfg.get("slices") and is_merged(cfg["slices"]):
        return _merged_slices(cfg, source)
    raw = dict(cfg.get("parameters") or {})
    shared_weight = raw.pop("weight", None)
    params, filtered = _parameters(raw, method, default_norm, default_rescale, problems)
    spec: dict[str, Any] = {"method": method, "params": {**fixed, **params},
                            "overrides": [{"tensors": filter_glob(part), "params": p} for part, p in filtered]}
    base = cfg.get("base_model")
    if cfg.get("slices"):
        models, spec["slices"] = _slices(cfg["slices"], problems)
    else:
        models = _models(cfg, base, method, shared_weight, problems)
    if method in ("slerp",):
        spec["models"] = [{"path": base}] + [m for m in models if m["path"] != base] if base else models
    else:
        spec["models"] = models
        if base is not None:
            spec["base"] = base
    dtype = cfg.get("out_dtype") or cfg.get("dtype")
    if dtype is not None:
        spec["dtype"] = dtype
    if cfg.get("chat_template") is not None:
        spec["chat_template"] = cfg["chat_template"]
    tokenizer_source(cfg.get("tokenizer_source"), base, spec)
    tokenizer_block(cfg.get("tokenizer"), base, spec, problems)
    collect(problems, SpecError, f"{source}: mergekit config")
    if not cfg.get("slices"):
        _per_tensor_weights(spec, cfg, source)
    return spec


def _shape_problems(cfg: dict) -> list[str]:
    """Where the document's structure is not mergekit's (a list where a mapping belongs, a number for a model path),
    say so by key, before translation looks inside."""
    problems = [f"key {k!r}: keys must be strings" for k in cfg if not isinstance(k, str)]
    for key in ("merge_method", "base_model", "dtype", "out_dtype", "tokenizer_source", "chat_template"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            problems.append(f"{key}: expected a string, got {type(cfg[key]).__name__}")
    problems += _parameter_shape(cfg.get("parameters"), "parameters")
    for key, entry_keys in (("models", ("model",)), ("slices", ("sources",))):
        entries = cfg.get(key)
        if entries is not None and not isinstance(entries, list):
            problems.append(f"{key}: expected a list, got {type(entries).__name__}")
            continue
        for i, entry in enumerate(entries or []):
            if not isinstance(entry, dict) or not all(isinstance(k, str) for k in entry):
                problems.append(f"{key}[{i}]: expected a mapping with {entry_keys[0]!r}")
            elif key == "models":
                if not isinstance(entry.get("model"), str):
                    problems.append(f"models[{i}].model: expected a model path or hub id (a string)")
                problems += _parameter_shape(entry.get("parameters"), f"models[{i}].parameters")
            else:
                problems += _slice_shape(entry, f"slices[{i}]")
    return problems


def _parameter_shape(raw, where: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        return [f"{where}: expected a mapping of parameter names to values"]
    problems = []
    for key, value in raw.items():
        rules = value if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) else []
        for j, rule in enumerate(rules):
            if "value" not in rule or not isinstance(rule.get("filter", ""), str) or set(rule) - {"filter", "value"}:
                problems.append(f"{where}.{key}[{j}]: a filtered value is {{filter: <name part>, value: <value>}}")
    return problems


def _slice_shape(entry: dict, where: str) -> list[str]:
    sources = entry.get("sources")
    if not isinstance(sources, list):
        return [f"{where}.sources: expected a list"]
    problems = []
    for j, src in enumerate(sources):
        if not isinstance(src, dict) or not isinstance(src.get("model"), str):
            problems.append(f"{where}.sources[{j}]: expected a mapping with a model path")
            continue
        layers = src.get("layer_range")
        if not (isinstance(layers, list) and len(layers) == 2 and all(type(n) is int for n in layers)):
            problems.append(f"{where}.sources[{j}].layer_range: expected [start, end] (two integers)")
    return problems


def _models(cfg: dict, base: str | None, method: str, shared_weight: Any, problems: list[str]) -> list[dict]:
    """The spec's models; a weight given per layer or per tensor (its own, else the config's `weight` chained after
    it) is kept under "mergekit_weight" for `_per_tensor_weights`."""
    models = []
    for i, entry in enumerate(cfg.get("models") or []):
        unknown = set(entry) - {"model", "parameters"}
        problems += [f"models[{i}]: key {k!r} is not supported" for k in sorted(unknown)]
        params = dict(entry.get("parameters") or {})
        setting = chained({"weight": params.pop("weight")} if "weight" in params else {},
                          {"weight": shared_weight} if shared_weight is not None else {}).get("weight", 1.0)
        mapped, filtered = _parameters(params, method, None, None, problems)
        if filtered:
            problems.append(f"models[{i}].parameters: per-model parameter filters are not supported (a filtered "
                            "`weight` is)")
        # mergekit skips the base among delta-space models: its task vector is zero
        if entry.get("model") == base and method not in ("linear", "karcher", "slerp", "passthrough"):
            continue
        if method in ("karcher", "sce", "ram", "nearswap", "arcee_fusion"):
            setting = 1.0  # these mergekit methods ignore per-model weights
        model = {"path": entry.get("model"), "weight": setting if is_plain(setting) else 1.0, "params": mapped}
        models.append(model if is_plain(setting) else {**model, "mergekit_weight": setting})
    return models


def _per_tensor_weights(spec: dict, cfg: dict, source: str) -> None:
    """Models whose weight mergekit gives per layer or per tensor: their weights evaluated for every tensor of the
    reference model, as overrides (mergekit_weights.py)."""
    settings = [m.pop("mergekit_weight", m.get("weight", 1.0)) for m in spec["models"]]
    if all(is_plain(s) for s in settings):
        return
    names, depth = tensor_names(reference_model(cfg, spec["models"]), source)
    plain, overrides = weight_overrides(settings, names, depth)
    for model, weight in zip(spec["models"], plain):
        model["weight"] = weight
    spec["overrides"] += overrides
    spec["depth"] = depth


def _parameters(raw: dict, method: str, default_norm, default_rescale, problems) -> tuple[dict, list]:
    """`params` for mergekit's settings `raw`, and its filtered rules as (name part, params) in the order overrides
    take them (mergekit_rules.py: mergekit's first matching rule wins, taskfuse's last matching override)."""
    params, filtered_rules = {}, []
    if method.startswith("nuslerp") and {"nuslerp_flatten", "nuslerp_row_wise"} & set(raw):
        flat, row_wise = raw.pop("nuslerp_flatten", True), raw.pop("nuslerp_row_wise", False)
        params["vectors"] = "flat" if flat else "columns" if row_wise else "rows"  # mergekit's "row_wise": dim 0
    if default_norm is not None:
        params["normalize"] = _normalize(method, raw.pop("normalize", default_norm))
    if default_rescale is not None:
        params["rescale"] = "l1" if raw.pop("rescale", default_rescale) else "none"
    for key, value in raw.items():
        if key in NO_EFFECT:
            continue
        if key == "filter_wise" and method == "model_stock":
            if value:
                problems.append("model_stock filter_wise: true is not supported")
            continue
        if key not in RENAME:
            problems.append(f"mergekit parameter {key!r} is not supported for {method}{suggest(key, RENAME)}")
            continue
        catch_all, filtered = split(rules_of(value))
        if catch_all is not None:
            params[RENAME[key]] = catch_all
        filtered_rules += [(part, {RENAME[key]: v}) for part, v in filtered]
    return params, filtered_rules


def _normalize(method: str, value: bool):
    if method in ("linear", "task_arithmetic"):
        return bool(value)
    return "weights" if value else "none"


def _slices(slices: list, problems: list[str]) -> tuple[list[dict], list[dict]]:
    entries = []
    for i, sl in enumerate(slices):
        sources = sl.get("sources") or []
        if len(sources) != 1 or set(sl) != {"sources"}:
            problems.append(f"slices[{i}]: only one source per slice (layer stacking) is supported")
            continue
        src = sources[0]
        if set(src) - {"model", "layer_range"}:
            problems.append(f"slices[{i}].sources[0]: keys {sorted(set(src) - {'model', 'layer_range'})} unsupported")
        entries.append({"model": src.get("model"), "layers": src.get("layer_range")})
    unique = list(dict.fromkeys(e["model"] for e in entries))
    return [{"path": p} for p in unique], entries


def _merged_slices(cfg: dict, source: str) -> dict[str, Any]:
    """A config whose slices merge several models: the first slice as a models-form config, the depth the slices
    cover, and, where there are several slices, every layer's settings as overrides (mergekit_slices.py)."""
    slices = cfg["slices"]
    method, fixed, default_norm, default_rescale = METHODS[cfg["merge_method"]]
    shared_weight = (cfg.get("parameters") or {}).get("weight", 1.0)
    problems = slice_problems(slices, method)
    problems += [f"slices[{i}].parameters.weight: a slice's weight is not supported. Fix: give each source its "
                 "weight" for i, sl in enumerate(slices) if "weight" in (sl.get("parameters") or {})]
    if (len(slices) > 1 or depth(slices) == 1) and not problems:
        if not is_plain(shared_weight):
            problems.append("parameters.weight: a weight given per layer or per tensor is not supported across "
                            "several slices. Fix: one slice for every layer, or plain weights.")
        problems += source_problems(cfg)
        every_slice = slice_settings(cfg)
        if evaluated(every_slice[0][2], 0.0) != evaluated(every_slice[-1][2], 0.0):
            problems.append("slices[0] and slices[-1] give different settings at their first layer: mergekit merges "
                            "the embeddings with the first slice's and the final norm and head with the last's, "
                            "which taskfuse cannot tell apart by name. Fix: the same settings at both ends.")
    collect(problems, SpecError, f"{source}: mergekit config")
    spec = translate_mergekit(as_models_config(cfg), source)
    spec["depth"] = depth(slices)
    if len(slices) > 1 or spec["depth"] == 1:  # a one-layer slice's gradients sit at 1, the schedule's at 0
        by_layer = tensors_by_layer(tensor_names(reference_model(cfg, spec["models"]), source)[0])
        spec["overrides"] += _per_layer_settings(cfg, method, default_norm, default_rescale, problems, by_layer)
        spec["overrides"] += per_layer_weights(cfg, [m["path"] for m in spec["models"]], shared_weight, by_layer)
        collect(problems, SpecError, f"{source}: mergekit config")
    return spec


def _per_layer_settings(cfg: dict, method: str, default_norm, default_rescale, problems: list[str],
                        by_layer: dict[int, list[str]]) -> list[dict]:
    """Every layer's settings at its position along its slice: one override for the layer's tensors, then one for
    each filtered rule's among them (the last wins). A setting one slice gives and another does not takes the
    method's default there, as mergekit's layer would."""
    from ..methods.registry import get_method
    defaults = {f.name: f.default for f in get_method(method).params.__dataclass_fields__.values()}
    every_slice = slice_settings(cfg)
    keys = {RENAME.get(k, k) for _, _, settings in every_slice for k in settings if k in RENAME}
    overrides = []
    for start, end, settings in every_slice:
        settings = {k: v for k, v in settings.items() if k != "weight"}  # the models' weights: per_layer_weights
        for layer, position in zip(range(start, end), positions(start, end)):
            params, filtered = _parameters(evaluated(settings, position), method, default_norm, default_rescale,
                                           problems)
            params = {**{k: defaults[k] for k in keys if k in defaults}, **params}
            overrides += [{"tensors": tensors, "params": p} for part, p in [(None, params), *filtered]
                          if (tensors := layer_tensors(by_layer, layer, part))]
    return overrides
