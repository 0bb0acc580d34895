"""Learning merge coefficients: Λ of a MergeView fitted to an objective over several tasks' inputs.

AdaMerging (Yang et al. 2024, arXiv:2310.02575) minimises the entropy of each task's predictions on unlabeled
inputs of that task; its code starts every coefficient at 0.3, steps Adam at lr 1e-3 and clamps Λ to [0, 1] after
each step, which is the default here. aTLAS minimises cross-entropy on labelled examples, from Λ = 0, unclamped,
with AdamW. Self Positioning (Li et al. 2024, arXiv:2410.15035) learns SLERP weights and a scale λ (SlerpView)
with a contrastive loss on a small labelled probe set plus μ·λ. The loop is the same: per step, one batch of every
task, the objectives summed over tasks (and the penalty added once).

The loop itself is programs/learning_loop.py's, with the gradient step as a choice: this module keeps the recipe,
the tasks' batch streams, one task's loss and the "merged-once" step (θ(Λ) merged once per step); the memory-lean
step is programs/recomputed_step.py's.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import TaskfuseError
from .merge_view import BoundMerge, MergeView
from .objectives import cross_entropy, entropy

# contrastive: InfoNCE between an input's embedding and its label's, the other labels as negatives; with the
# benchmark's heads (logit_scale × cosine to each label's prompt embedding) that is the heads' cross-entropy
OBJECTIVES = ("entropy", "cross_entropy", "contrastive")

# (step, steps, loss) after each step
LearnProgress = Callable[[int, int, float], None]


class DivergedError(TaskfuseError, FloatingPointError):
    """The coefficients or the loss became NaN/Inf while learning."""


@dataclass(frozen=True)
class Recipe:
    objective: str = "entropy"  # or "cross_entropy" / "contrastive" (both need labels)
    steps: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"  # or "adamw"
    clamp: tuple[float, float] | None = (0.0, 1.0)
    scale_penalty: float = 0.0  # μ of Self Positioning's μ·λ (a view with a `scale` only)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}: use one of {', '.join(OBJECTIVES)}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}: use adam or adamw")


@dataclass(frozen=True)
class TaskBatches:
    """One task's endless stream of batches, and the head that turns pooled features into its logits.

    `batches()` yields (inputs, labels): inputs are whatever `features` takes; labels may be None for entropy.
    """

    head: nn.Module
    batches: Callable[[], Iterator[tuple[dict, Tensor | None]]]
    features: Callable[[Callable, dict], Tensor]  # (merged model, inputs) -> (B, H) features the head reads


def _accumulate_gradients(view: MergeView, tasks: dict[str, TaskBatches], streams: dict, objective: str) -> float:
    """Λ.grad of the summed task losses; returns that sum.

    θ(Λ) is computed once, then each task runs forward and backward on detached copies of it, so only one task's
    activations are alive at a time and their gradients add up in θ's .grad; one backward from θ to Λ follows (the
    merge's own backward, T × |θ| multiply-adds, runs once per step instead of once per task).
    """
    merged = view.merged_parameters()
    leaves = {n: p.detach().requires_grad_() for n, p in merged.items()}
    model = BoundMerge(view.base, leaves)
    total = 0.0
    for name, task in tasks.items():
        loss = _task_loss(model, task, next(streams[name]), objective)
        loss.backward()
        total += float(loss.detach())
    used = [n for n in merged if leaves[n].grad is not None]  # e.g. BERT's pooler feeds no sentence embedding
    if used:
        torch.autograd.backward([merged[n] for n in used], [leaves[n].grad for n in used])
    return total


def _task_loss(view: BoundMerge, task: TaskBatches, batch: tuple[dict, Tensor | None], objective: str) -> Tensor:
    inputs, labels = batch
    logits = task.head(task.features(view, inputs))
    if objective == "entropy":
        return entropy(logits)
    if labels is None:
        raise ValueError(f"the {objective} objective needs labelled batches")
    return cross_entropy(logits, labels)
