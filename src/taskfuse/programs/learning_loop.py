"""The learning loop with its gradient step as a choice, the memory-lean step by default.

Two steps give the same Λ gradient (up to summation order): programs/learn.py's merges θ(Λ) once per step with its
graph and accumulates θ's gradient over the tasks; programs/recomputed_step.py's never holds that gradient and
recomputes each layer in backward, which keeps learning within issue 12's memory bound (base + task vectors + one
batch's activations + 20 %) at 1.7-1.9x the time on the benchmark's encoder rows (benchmarks/learning_memory.py
measures both).

Every learned result runs this loop (`taskfuse learn`, on the zoo and with --spec, and the benchmark's encoder and
LLM rows), with the memory-lean step unless asked otherwise. It replaced programs/learn.py's loop, which merged
once per step only; learn.py keeps that step, the recipe and the tasks' batches.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .learn import DivergedError, LearnProgress, Recipe, TaskBatches, _accumulate_gradients
from .merge_view import MergeView
from .recomputed_step import accumulate_gradients_recomputed

# (view, tasks, their batch streams, objective) -> the summed loss, Λ's gradient added to its .grad
GradientStep = Callable[[MergeView, dict[str, TaskBatches], dict, str], float]
STEPS: dict[str, GradientStep] = {"recomputed": accumulate_gradients_recomputed, "merged-once": _accumulate_gradients}
DEFAULT_STEP = "recomputed"


def learn_coefficients(view: MergeView, tasks: dict[str, TaskBatches], recipe: Recipe = Recipe(),
                       progress: LearnProgress | None = None, step: str = DEFAULT_STEP) -> list[float]:
    """Fit the view's trainable tensors (its coefficients, and a SlerpView's scale) in place with STEPS[step];
    returns the loss of every step."""
    if step not in STEPS:
        raise ValueError(f"unknown gradient step {step!r}: use one of {', '.join(STEPS)}")
    gradient_step = STEPS[step]
    params = [p for p in view.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(params, lr=recipe.lr) if recipe.optimizer == "adamw"
                 else torch.optim.Adam(params, lr=recipe.lr))
    streams = {name: t.batches() for name, t in tasks.items()}
    losses = []
    for done in range(1, recipe.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        value = gradient_step(view, tasks, streams, recipe.objective)
        if recipe.scale_penalty:  # Self Positioning's μ·λ
            penalty = recipe.scale_penalty * view.scale
            penalty.backward()
            value += float(penalty.detach())
        optimizer.step()
        if recipe.clamp is not None:
            with torch.no_grad():
                view.coefficients.clamp_(*recipe.clamp)
        _check_finite(value, params, done, recipe.steps)
        losses.append(value)
        if progress:
            progress(done, recipe.steps, value)
    return losses


def _check_finite(loss: float, params: list[torch.Tensor], done: int, steps: int) -> None:
    if not math.isfinite(loss) or not all(bool(torch.isfinite(p).all()) for p in params):
        raise DivergedError(f"learning diverged at step {done} of {steps} (loss {loss}): the coefficients are not "
                            "finite. Fix: lower the learning rate or clamp the coefficients.")
