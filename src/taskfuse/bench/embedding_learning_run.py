"""`taskfuse learn --spec`'s work for embedding models: learn over the spec's sentence-transformers models on their
pairs or labelled texts, and write the merge (with the base's sentence-transformers modules, so
`SentenceTransformer(OUT)` loads it), its replay spec, the learned record and the coefficient map."""
from __future__ import annotations

from pathlib import Path

from .. import api
from ..programs.embedding_learning import learn_for_embeddings
from ..programs.learn import LearnProgress
from ..programs.spec_learning import SpecLearning
from ..spec.model import MergeSpec
from .learned import LearnedMethod
from .memory import RssPeak
from .spec_learned_output import learned_record, replay_spec
from .spec_learning_run import learned_files


def learn_embedding_models(chosen: LearnedMethod, merge_spec: MergeSpec, data: list[str], out: Path,
                           start: Path | None, step: str, sparsifier: tuple[str, dict] | None = None,
                           progress: LearnProgress | None = None, max_tokens: int | None = None) -> dict:
    """Learn `chosen` over the spec's embedding models and write `out`; returns the learned record."""
    start_path = None if start is None else str(start.resolve())  # the replay spec must find it from anywhere
    how = SpecLearning(chosen.parameterization, chosen.recipe, chosen.init, chosen.ties_density,
                       batch_size=chosen.batch_size, seed=merge_spec.seed, start=start_path, step=step,
                       sparsify=sparsifier)
    with RssPeak() as memory:
        result = learn_for_embeddings(merge_spec, data, how, chosen.per_class, progress, max_tokens,
                                      slerp=chosen.interpolation == "slerp")
    models = [*([start_path] if start_path else []), *(m.path for m in merge_spec.models)]
    replay = replay_spec(chosen, result, merge_spec, models, None, sparsifier)
    learned = learned_record(chosen, result, how, models, sparsifier, memory.added)
    api.merge(replay, out, extra_files=learned_files(learned, chosen.name))
    return learned
