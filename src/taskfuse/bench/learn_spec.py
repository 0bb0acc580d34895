"""`taskfuse learn --spec`: the spec's kind of model (programs/spec_models.py) picks the run that learns it."""
from __future__ import annotations

from pathlib import Path

from .. import api
from ..programs.learn import LearnProgress
from ..programs.spec_models import EMBEDDING, spec_model_kind
from .embedding_learning_run import learn_embedding_models
from .learned import LearnedMethod
from .spec_learning_run import learn_spec_models


def learn_spec(chosen: LearnedMethod, spec_path: Path, data: list[str], out: Path, start: Path | None, step: str,
               sparsifier: tuple[str, dict] | None = None, progress: LearnProgress | None = None,
               max_tokens: int | None = None) -> dict:
    """Learn `chosen` over the spec's models (causal LMs, sequence classifiers or embedding models) and write
    `out`; returns the learned record."""
    spec = api.as_spec(spec_path)  # parsed once: its kind and the run that learns it read the same spec
    if spec_model_kind(spec) == EMBEDDING:
        return learn_embedding_models(chosen, spec, data, out, start, step, sparsifier, progress, max_tokens)
    return learn_spec_models(chosen, spec, data, out, start, step, sparsifier, progress, max_tokens)
