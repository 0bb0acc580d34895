"""Learning a view the caller builds on the zoo's validation data: the part every zoo row shares however its view
is made (from the experts, over a merge, per partition, over pre-processed vectors).

bench/learned.py's learn_on_zoo and bench/learned_over_merge.py's learn_over_merge predate this and still hold
their own copy of it (their code is under committed results).
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..programs.learn import LearnProgress
from ..programs.learning_loop import DEFAULT_STEP, learn_coefficients
from ..programs.merge_view import MergeView
from ..zoo.build import Zoo
from .learned import LearnedMethod, LearnedResult, held_memory, task_streams
from .memory import RssPeak


def learn_built_view(zoo: Zoo, method: LearnedMethod, build_view: Callable[[], MergeView],
                     progress: LearnProgress | None = None, step: str = DEFAULT_STEP) -> LearnedResult:
    """Build the view, then fit its coefficients on each task's validation batches (the zoo's seed orders them)
    with the gradient step STEPS[step]; times the learning alone and measures the memory building and learning
    added."""
    with RssPeak() as memory:
        view = build_view()
        streams = task_streams(zoo, method, zoo.variant.recipe.seed)
        torch.manual_seed(zoo.variant.recipe.seed)
        started = time.perf_counter()
        losses = learn_coefficients(view, streams, method.recipe, progress, step)
        seconds = time.perf_counter() - started
    return LearnedResult(view, losses, seconds, step, held_memory(view, memory.added))
