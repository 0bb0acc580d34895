"""`taskfuse learn --spec`'s work: a user's causal LMs or sequence classifiers, each learning from its own JSONL
(from a merge of them, with a start), written as the replayable merge with its learned record and coefficient map
(and, for classifiers, every model's head beside the merged body: programs/classifier_heads.py)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .. import api
from ..errors import UsageError
from ..io.output import staged_output
from ..programs.classifier_data import MAX_TOKENS
from ..programs.classifier_heads import write_heads
from ..programs.classifier_learning import CLASSIFIER_TENSOR_RULES, is_classifier_spec, learn_for_classifiers
from ..programs.learn import LearnProgress
from ..programs.spec_learning import SpecLearning, learn_for_spec
from ..spec.model import MergeSpec
from .learned import LearnedMethod
from .memory import RssPeak
from .spec_learned_output import learned_record, replay_spec


def learned_files(learned: dict, method: str) -> dict[str, bytes]:
    """taskfuse_learned.json, and for per-tensor coefficients their layer × task map, to write beside the merge."""
    from .plots import coefficient_heatmap
    files = {"taskfuse_learned.json": json.dumps(learned, indent=1).encode()}
    if "*" not in learned["coefficients"]:
        what = ("mean over each tensor's partitions" if "partition_coefficients" in learned
                else "learned coefficients")
        with tempfile.TemporaryDirectory() as tmp:
            coefficient_heatmap(learned["coefficients"], learned["tasks"], f"{method}: {what}",
                                Path(tmp) / "coefficients.png")
            files["coefficients.png"] = (Path(tmp) / "coefficients.png").read_bytes()
    return files


def learn_spec_models(chosen: LearnedMethod, spec: MergeSpec | Path, data: list[str], out: Path, start: Path | None,
                      step: str, sparsifier: tuple[str, dict] | None = None,
                      progress: LearnProgress | None = None, max_tokens: int | None = None) -> dict:
    """Learn `chosen` over the spec's models and write `out`; returns the learned record (with "heads" for
    classifiers). `max_tokens`: classifiers only, tokens per text (default programs/classifier_data.MAX_TOKENS)."""
    if chosen.interpolation == "slerp":
        raise UsageError(f"{chosen.name} is Self Positioning for embedding models (a contrastive loss on pairs or "
                         "labelled texts). With a spec of causal LMs or sequence classifiers use atlas (cross-entropy "
                         "on your texts or labels) or an adamerging method.")
    merge_spec = api.as_spec(spec)
    classifiers = is_classifier_spec(merge_spec)
    if max_tokens is not None and not classifiers:
        raise UsageError("--max-tokens goes with a spec of sequence classifiers or embedding models; a causal LM's "
                         "texts are cut to its own context.")
    if chosen.per_class is not None and not classifiers:
        raise UsageError(f"{chosen.name} takes k examples per class of a classification task; with --spec's causal "
                         "LMs use atlas (cross-entropy on your texts) or an adamerging method.")
    start_path = None if start is None else str(start.resolve())  # the replay spec must find it from anywhere
    how = SpecLearning(chosen.parameterization, chosen.recipe, chosen.init, chosen.ties_density,
                       **({"batch_size": chosen.batch_size} if classifiers else {}),
                       seed=merge_spec.seed, start=start_path, step=step, sparsify=sparsifier)
    with RssPeak() as memory:
        result = (learn_for_classifiers(merge_spec, data, how, chosen.per_class, progress, max_tokens or MAX_TOKENS)
                  if classifiers else learn_for_spec(merge_spec, data, how, progress))
    models = [*([start_path] if start_path else []), *(m.path for m in merge_spec.models)]
    replay = replay_spec(chosen, result, merge_spec, models, CLASSIFIER_TENSOR_RULES if classifiers else None,
                         sparsifier)
    learned = learned_record(chosen, result, how, models, sparsifier, memory.added)
    if not classifiers:
        api.merge(replay, out, extra_files=learned_files(learned, chosen.name))
        return learned
    learned["heads"] = {m.path: f"heads/{i}" for i, m in enumerate(merge_spec.models)}
    with staged_output(out, "merge") as stage:  # the merged body and every head: whole or not at all
        api.merge(replay, stage, extra_files=learned_files(learned, chosen.name))
        write_heads(stage, result.own, result.configs)
    return learned
