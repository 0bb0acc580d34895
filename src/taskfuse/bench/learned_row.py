"""A learned method's row in the benchmark: learn Λ, write the merge through the engine from its spec, score it.

The row is scored from the written directory, so what the report shows is what `taskfuse merge` replays from the
row's spec; the coefficients are never judged from the in-memory view alone.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .. import api
from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score, as_dict, mean, normalized
from ..programs.learned_spec import learned_spec
from ..programs.slerp_view import SlerpView
from ..zoo.build import Zoo
from .learned import LearnedMethod, LearnedResult, describe, learn_on_zoo

TENSOR_RULES = {"missing": "copy_base"}  # as the data-free rows: the base file carries a buffer the experts lack


def run_learned(zoo: Zoo, method: LearnedMethod, test: Evaluator, test_experts: dict[str, Score], report) -> dict:
    report("learn", 0, method.recipe.steps, method.name)
    result = learn_on_zoo(zoo, method, lambda done, total, loss: report("learn", done, total,
                                                                          f"{method.name} loss {loss:.4f}"))
    report("test", 0, 1, method.name)
    with tempfile.TemporaryDirectory(prefix=f"taskfuse-bench-{method.name}-") as work:
        spec, merge_seconds = write_learned(zoo, method, result, Path(work) / "merged")
        scores = test.score(load_encoder(Path(work) / "merged"))
    norm = normalized(scores, test_experts)
    row = record(zoo, method, result)
    row["seconds"]["merge"] = round(merge_seconds, 2)
    return {**row, "spec": spec, "test": as_dict(scores), "test_normalized": norm,
            "average": {"accuracy": mean(s.accuracy for s in scores.values()),
                        "macro_f1": mean(s.macro_f1 for s in scores.values()), "normalized": mean(norm.values())}}


def write_learned(zoo: Zoo, method: LearnedMethod, result: LearnedResult, out: Path,
                  extra_files: dict[str, bytes] | None = None) -> tuple[dict, float]:
    """Write the learned merge to `out` through the streaming engine; returns its spec and the merge's seconds."""
    spec = learned_spec(result.view, str(zoo.base_dir), [str(e.model_dir) for e in zoo.experts.values()],
                        seed=zoo.variant.recipe.seed, dtype="float32", tensor_rules=TENSOR_RULES,
                        ties_density=method.ties_density)
    started = time.perf_counter()
    api.merge(spec, out, threads=None, extra_files=extra_files)
    return spec, time.perf_counter() - started


def record(zoo: Zoo, method: LearnedMethod, result: LearnedResult) -> dict:
    """How a merge was learned, from which data and at what cost (saved beside it as taskfuse_learned.json)."""
    params = summary(method)
    if isinstance(result.view, SlerpView):  # the learned λ belongs in the table beside what it was learned from
        params["scale"] = round(float(result.view.scale.detach()), 3)
    return {"method": method.name, "kind": "learned", "params": params, "learning": describe(method),
            "data_seen": method.data_seen(zoo), "coefficients": coefficients(result.view),
            "tasks": list(zoo.experts), "losses": [round(x, 5) for x in result.losses],
            "seconds": {"learn": round(result.seconds, 1)}, "gradient_step": result.step, "memory": result.memory}


def summary(method: LearnedMethod) -> dict:
    """The few facts a table row shows: objective, granularity, steps, and the data it learned from."""
    data = ("labelled validation" if method.per_class is None else f"{method.per_class} labelled validation "
            "examples per class") if method.labelled else "unlabelled validation inputs"
    kind = "slerp weights, scale" if method.interpolation == "slerp" else method.parameterization.kind
    return {"objective": method.recipe.objective, "coefficients": kind,
            "steps": method.recipe.steps, "data": data}


def coefficients(view) -> dict:
    """Per tensor, the learned weight of each task (task-wise coefficients under the key "*"; Self Positioning's
    interpolation weights there too, beside its scale)."""
    if isinstance(view, SlerpView):
        return view.learned()
    if view.parameterization.kind == "task":
        return {"*": view.coefficients.detach().double().tolist()}
    return view.tensor_weights()
