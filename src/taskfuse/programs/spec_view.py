"""The differentiable view `taskfuse learn --spec` learns over, from a base module, θ₀ and the models' task vectors:
pre-processed as the method says (TIES trimming, a registered sparsifier), from a start merge if given, or Self
Positioning's SLERP view."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..io.checkpoint import Checkpoint
from .merge_view import MergeView
from .slerp_view import SlerpView
from .sparsified_vectors import sparsified_vectors
from .sparsify import ties_vectors
from .spec_learning import SpecLearning, task_vector, view_over_merge


def check_learnable(how: SpecLearning, slerp: bool = False) -> None:
    """What learning_view refuses, checked before any model loads."""
    if slerp and (how.start is not None or how.ties_density is not None or how.sparsify is not None):
        raise UsageError("self_positioning interpolates the models' own task vectors: it takes no --start and no "
                         "--sparsify. Fix: drop them, or learn with atlas.")
    if how.start is not None and (how.ties_density is not None or how.sparsify is not None):
        raise UsageError("a start merge cannot be pre-processed with the models' task vectors: the replayed merge "
                         "would pre-process it again. Fix: drop --start, or learn without TIES/--sparsify.")


def learning_view(module: nn.Module, theta0: dict[str, torch.Tensor], vectors: list[dict[str, torch.Tensor]],
                  how: SpecLearning, seed: int, slerp: bool = False) -> MergeView:
    """`slerp`: Self Positioning's view (its `how.init` is λ's start), which takes the vectors as they are."""
    check_learnable(how, slerp)
    if how.ties_density is not None:
        vectors = ties_vectors(vectors, how.ties_density)
    if how.sparsify is not None:  # keyed on the merge's seed, as the replayed merge draws
        vectors = sparsified_vectors(vectors, *how.sparsify, seed=seed, bases=theta0)
    if slerp:
        return SlerpView(module, vectors, scale=how.init)
    if how.start is None:
        return MergeView(module, vectors, how.parameterization, how.init)
    start = task_vector(Checkpoint.open(how.start), theta0, f"start merge {how.start}")
    return view_over_merge(module, start, vectors, how.parameterization)
