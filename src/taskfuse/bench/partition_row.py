"""aTLAS×K on the zoo: the record and the written merge of a partitioned view.

bench/learned_row.py records and writes task- and layer-wise views as per-tensor weights; a partitioned view's
coefficients vary inside each tensor, so its record keeps every partition's and its merge is written by
programs/partition_spec.py (the registered partitioned_task_arithmetic method).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .. import api
from ..errors import UsageError
from ..programs.merge_view import MergeView, Parameterization
from ..programs.partition_spec import partition_coefficients, partition_means, partition_spec
from ..zoo.build import Zoo
from .learned import LearnedMethod, LearnedResult, describe
from .learned_row import TENSOR_RULES, coefficients, summary


def with_partitions(method: LearnedMethod, partitions: int | None, seed: int = 0) -> LearnedMethod:
    """aTLAS×K: `method`'s per-tensor coefficients split over each tensor's K seeded random partitions (None: the
    method as it is)."""
    if partitions is None:
        return method
    if method.parameterization.kind != "layer" or method.interpolation != "linear" or method.ties_density is not None:
        raise UsageError(f"--partitions {partitions}: {method.name} cannot learn per partition of a tensor (it learns "
                         "task-wise coefficients, SLERP weights or over TIES-trimmed vectors). Fix: use atlas, "
                         "atlas_fewshot or adamerging_layer.")
    return replace(method, parameterization=Parameterization("partition", partitions, seed))


def is_partitioned(view) -> bool:
    return isinstance(view, MergeView) and view.parameterization.kind == "partition"


def learned_coefficients(view) -> dict:
    """What taskfuse_learned.json holds of the coefficients: per tensor and task, for partitions their mean over
    the tensor's partitions (what the heat map draws) and every partition's under "partition_coefficients"."""
    if is_partitioned(view):
        return {"coefficients": partition_means(view), "partition_coefficients": partition_coefficients(view)}
    return {"coefficients": coefficients(view)}


def partitioned_record(zoo: Zoo, method: LearnedMethod, result: LearnedResult) -> dict:
    """learned_row.record's fields for a partitioned view (record reads coefficients as per-tensor weights)."""
    return {"method": method.name, "kind": "learned",
            "params": {**summary(method), "partitions": method.parameterization.partitions},
            "learning": describe(method), "data_seen": method.data_seen(zoo), **learned_coefficients(result.view),
            "tasks": list(zoo.experts), "losses": [round(x, 5) for x in result.losses],
            "seconds": {"learn": round(result.seconds, 1)}, "gradient_step": result.step, "memory": result.memory}


def write_partitioned(zoo: Zoo, result: LearnedResult, out: Path,
                      extra_files: dict[str, bytes] | None = None) -> tuple[dict, float]:
    """Write the partitioned merge to `out` through the streaming engine; returns its spec and the merge's
    seconds (learned_row.write_learned's counterpart)."""
    spec = partition_spec(result.view, str(zoo.base_dir), [str(e.model_dir) for e in zoo.experts.values()],
                          seed=zoo.variant.recipe.seed, dtype="float32", tensor_rules=TENSOR_RULES)
    started = time.perf_counter()
    api.merge(spec, out, threads=None, extra_files=extra_files)
    return spec, time.perf_counter() - started
