"""Tail (Polyak–Ruppert) averaging of learned coefficients: the mean of the iterates of a learning loop's last steps
instead of its last iterate.

With a constant learning rate and small validation batches the coefficients end wherever the last few batches pushed
them; the mean over the last half of the steps (the usual choice for stochastic weight averaging) damps that noise
without another pass over the data. benchmarks/tail_averaged_over_merge.py measures it on the benchmark's best
learned row (aTLAS learned from Iso-CTS), on validation and on test, over five learning seeds.

It wraps a learning loop from outside, so that every learning path (`taskfuse learn` on the zoo, with --spec, the
benchmark's studies) gets it without a loop of its own: the loop's parameters are found through a step hook of
torch.optim (the loop does not hand its optimiser out), and the iterates are read by the loop's progress callback,
which it calls after each step once the step's result is final (clamped, as AdaMerging's are, and checked finite).
At the last step the parameters are set to the mean, before the caller writes them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ..errors import UsageError


class TailAverage:
    """The running sums of one learning loop's last iterates; `progress` wraps the loop's progress callback."""

    def __init__(self, steps: int, fraction: float):
        check_fraction(fraction)
        self.steps, self.fraction = steps, fraction
        self.first_averaged = steps - math.ceil(fraction * steps) + 1  # 1-based: the last ⌈fraction · steps⌉ steps
        self.optimizer: torch.optim.Optimizer | None = None
        self.sums: list[torch.Tensor] = []
        self.last: list[torch.Tensor] = []  # each parameter's last iterate, once the average replaced it
        self.applied = False

    def before_step(self, optimizer: torch.optim.Optimizer, *_) -> None:
        if self.optimizer is None:
            self.optimizer = optimizer
        elif optimizer is not self.optimizer:
            raise RuntimeError("tail averaging wraps one learning loop; a second optimiser stepped in its block")

    def progress(self, inner: Callable[[int, int, float], None] | None = None) -> Callable[[int, int, float], None]:
        """The loop's progress callback: reads each averaged step's result, and after the last sets the mean."""
        def report(done: int, total: int, loss: float) -> None:
            if total != self.steps or self.optimizer is None:
                raise RuntimeError(f"tail averaging was set up for {self.steps} steps of a loop that has {total}")
            if done >= self.first_averaged:
                params = _params(self.optimizer)
                if not self.sums:
                    self.sums = [torch.zeros_like(p, dtype=torch.float64) for p in params]
                with torch.no_grad():
                    for total_, p in zip(self.sums, params):
                        total_.add_(p.detach())
            if done == self.steps:
                self._apply()
            if inner:
                inner(done, total, loss)
        return report

    def _apply(self) -> None:
        with torch.no_grad():
            for p, total in zip(_params(self.optimizer), self.sums):
                self.last.append(p.detach().clone())
                p.copy_((total / self.averaged_steps).to(p.dtype))
        self.applied = True

    def restore_last(self) -> None:
        """Put the loop's own last iterate back in place of the mean (to score both from one run)."""
        with torch.no_grad():
            for p, last in zip(_params(self.optimizer), self.last):
                p.copy_(last)

    @property
    def averaged_steps(self) -> int:
        return self.steps - self.first_averaged + 1

    def describe(self) -> dict:
        return {"fraction": self.fraction, "steps_averaged": self.averaged_steps, "from_step": self.first_averaged,
                "of_steps": self.steps}


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise UsageError(f"--average-tail {fraction}: give the fraction of the last steps to average, in (0, 1] "
                         "(0.5: the second half).")


@contextmanager
def tail_averaged(steps: int, fraction: float) -> Iterator[TailAverage]:
    """Within the block one learning loop of `steps` steps runs with `average.progress(...)` as its progress
    callback; after its last step its parameters hold the mean of their values after each of the last
    ⌈fraction · steps⌉ steps (`average.last` the values the loop ended with)."""
    average = TailAverage(steps, fraction)
    handle = register_optimizer_step_pre_hook(average.before_step)
    try:
        yield average
    finally:
        handle.remove()
    if not average.applied:
        raise RuntimeError("tail averaging: the loop in its block did not report its last step through "
                           "average.progress")


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]
