"""Task arithmetic: add scaled task vectors to the base."""
from __future__ import annotations

from pydantic.dataclasses import dataclass

from ..ops.consensus import combine, scaled
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class TaskArithmetic:
    scale: float = 1.0  # λ on the summed task vector
    normalize: bool = False  # divide by Σ weights first (mergekit's `normalize`)


@method(
    "task_arithmetic",
    params=TaskArithmetic,
    space="delta",
    paper="Ilharco et al. 2023, Editing Models with Task Arithmetic, ICLR, arXiv:2212.04089",
    reference="peft.utils.merge_utils.task_arithmetic; mergekit task_arithmetic",
    traits=("symmetric", "chunkable", "differentiable"),
)
def task_arithmetic(x: Inputs, p: TaskArithmetic):
    """λ · Σ_t w_t τ_t (Eq. 1 of the paper with per-task weights)."""
    return scaled(combine(x.stack, x.weights, "weights" if p.normalize else "none"), p.scale)
