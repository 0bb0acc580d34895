"""What `taskfuse learn --spec` writes for a learned view: the spec that replays it and the learned record.

Shared by the runs for causal LMs and classifiers (bench/spec_learning_run.py) and for embedding models
(bench/embedding_learning_run.py).
"""
from __future__ import annotations

from ..programs.learned_spec import learned_spec
from ..programs.partition_spec import partition_spec
from ..programs.sparsified_vectors import sparsified_spec
from ..programs.spec_learning import SpecLearned, SpecLearning
from ..spec.model import MergeSpec
from .learned import LearnedMethod, describe, held_memory
from .partition_row import learned_coefficients
from .sparsified_row import sparsify_record


def replay_spec(chosen: LearnedMethod, result: SpecLearned, merge_spec: MergeSpec, models: list[str],
                tensor_rules: dict | None, sparsifier: tuple[str, dict] | None) -> dict:
    """The taskfuse spec whose merge is the learned θ: per-partition, per-tensor or Self Positioning's weights."""
    if chosen.parameterization.kind == "partition":
        return partition_spec(result.view, merge_spec.base, models, seed=merge_spec.seed, dtype=merge_spec.dtype,
                              tensor_rules=tensor_rules)
    replay = learned_spec(result.view, merge_spec.base, models, seed=merge_spec.seed, dtype=merge_spec.dtype,
                          tensor_rules=tensor_rules, ties_density=chosen.ties_density)
    return replay if sparsifier is None else sparsified_spec(replay, *sparsifier)


def learned_record(chosen: LearnedMethod, result: SpecLearned, how: SpecLearning, models: list[str],
                   sparsifier: tuple[str, dict] | None, rss_added: int) -> dict:
    """taskfuse_learned.json: the method, the data each model's task was learned on, the coefficients, the losses,
    the time and what the learning held in memory."""
    return {"method": chosen.name, "learning": describe(chosen), "data_seen": result.data_seen,
            **({"start": how.start} if how.start else {}),
            **learned_coefficients(result.view), "tasks": models,
            **({"sparsify": sparsify_record(sparsifier)} if sparsifier else {}),
            "losses": [round(x, 5) for x in result.losses], "seconds": {"learn": round(result.seconds, 1)},
            "gradient_step": how.step, "memory": held_memory(result.view, rss_added)}
