"""An aTLAS×K merge as an ordinary spec: `partitioned_task_arithmetic` with each tensor's (T, K) coefficients.

A partitioned view's coefficients vary inside a tensor, so they are not the per-tensor weights learned_spec writes
for task- and layer-wise views. The registered method partitioned_task_arithmetic draws each tensor's partitions
from (partition_seed, name) as the view does and scales each model's task vector partition by partition; one
override per tensor that has coefficients carries them. Tensors without coefficients have no task vector, so the
method's default (every scale 1) reproduces θ₀ there.
"""
from __future__ import annotations

import glob

from ..errors import UsageError
from .learned_spec import _finish
from .merge_view import MergeView


def partition_coefficients(view: MergeView) -> dict[str, dict[int, list[float]]]:
    """Per tensor, each model's learned scale in each partition (model index → K values)."""
    lam = view.coefficients.detach().double()  # (T, P, K)
    return {name: {t: lam[t, i].tolist() for t in range(view.tasks)} for i, name in enumerate(view.names)}


def partition_means(view: MergeView) -> dict[str, list[float]]:
    """Per tensor, each model's scale averaged over the partitions: the layer × task map a report can draw."""
    lam = view.coefficients.detach().double().mean(-1)  # (T, P)
    return {name: lam[:, i].tolist() for i, name in enumerate(view.names)}


def partition_spec(view: MergeView, base: str, models: list[str], *, seed: int = 0, dtype: str | None = None,
                   tensor_rules: dict | None = None) -> dict:
    """The taskfuse spec whose merge equals the partitioned `view`'s θ(Λ)."""
    if view.parameterization.kind != "partition":
        raise UsageError("partition_spec writes aTLAS×K views; a task- or layer-wise view is written by learned_spec")
    if len(models) != view.tasks:
        raise UsageError(f"the view has {view.tasks} task vectors but {len(models)} models were named")
    spec = {"taskfuse": 1, "method": "partitioned_task_arithmetic", "base": base,
            "models": [{"path": m, "weight": 1.0} for m in models],
            "params": {"partitions": view.parameterization.partitions,
                       "partition_seed": view.parameterization.seed},
            "seed": seed, "config_from": "base", "tokenizer_from": "base",
            # glob.escape: a tensor name is matched as itself, never as a pattern
            "overrides": [{"tensors": glob.escape(name), "params": {"coefficients": rows}}
                          for name, rows in partition_coefficients(view).items()]}
    return _finish(spec, dtype, tensor_rules)
