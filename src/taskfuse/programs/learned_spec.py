"""A learned merge as an ordinary spec: what `taskfuse merge` replays, bit for bit, on this or a bigger machine.

θ(Λ) = θ₀ + Σ_t Λ_t τ_t is task arithmetic at scale 1 with per-model weights (TIES with normalize="none" over
AdaMerging++'s trimmed vectors): task-wise Λ become the models' weights, layer-wise Λ per-tensor `weights`
overrides (one per tensor that has coefficients). Tensors without
coefficients have no task vector (every expert left them at θ₀), so any weight reproduces θ₀ there. Self
Positioning's view (SlerpView) is the registered `self_positioning` method with its weights a and scale λ.
"""
from __future__ import annotations

import glob

from ..errors import UsageError
from .merge_view import MergeView
from .slerp_view import SlerpView
from .sparsify import replay_method


def learned_spec(view: MergeView, base: str, models: list[str], *, seed: int = 0, dtype: str | None = None,
                 tensor_rules: dict | None = None, ties_density: float | None = None) -> dict:
    """The taskfuse spec whose merge equals `view`'s θ(Λ) (task-wise or layer-wise coefficients); with
    `ties_density`, the view's vectors were TIES-trimmed at that density (AdaMerging++) and the spec is a ties merge."""
    if len(models) != view.tasks:
        raise UsageError(f"the view has {view.tasks} task vectors but {len(models)} models were named")
    if isinstance(view, SlerpView):
        learned = view.learned()
        spec = {"taskfuse": 1, "method": "self_positioning", "base": base,
                "models": [{"path": m, "weight": w} for m, w in zip(models, learned["*"])],
                "params": {"scale": learned["scale"]}, "seed": seed, "config_from": "base", "tokenizer_from": "base"}
        return _finish(spec, dtype, tensor_rules)
    kind = view.parameterization.kind
    if kind == "partition":
        raise UsageError("aTLAS×K coefficients vary inside a tensor and cannot be written as per-tensor weights. "
                         "Fix: learn with the task or layer parameterization to save a replayable merge.")
    lam = view.coefficients.detach().double().tolist()
    weights = lam if kind == "task" else [1.0] * len(models)
    method, params = replay_method(ties_density)
    spec = {"taskfuse": 1, "method": method, "base": base,
            "models": [{"path": m, "weight": w} for m, w in zip(models, weights)],
            "params": params, "seed": seed, "config_from": "base", "tokenizer_from": "base"}
    if kind == "layer":  # glob.escape: a tensor name is matched as itself, never as a pattern
        spec["overrides"] = [{"tensors": glob.escape(name), "weights": w}
                             for name, w in view.tensor_weights().items()]
    return _finish(spec, dtype, tensor_rules)


def _finish(spec: dict, dtype: str | None, tensor_rules: dict | None) -> dict:
    if dtype:
        spec["dtype"] = dtype
    if tensor_rules:
        spec["tensor_rules"] = tensor_rules
    return spec
