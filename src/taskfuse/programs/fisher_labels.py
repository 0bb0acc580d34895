"""Which labels a diagonal Fisher squares the gradients of: the data's own, or the model's (or, FusionBench's way,
all of them at once).

The Fisher of a model p(y | x) is E_x E_{y ~ p(y|x)} [(∂ log p(y | x) / ∂θ)²]: the labels come from the model.

- given: the data's labels, the empirical Fisher (`statistics.fisher_statistics`);
- sampled: one label per scored row drawn from the model's own distribution (seeded), an unbiased estimate of the
  true Fisher at the empirical one's cost, and the usual choice for a causal LM, whose vocabulary rules out the next;
- expected: the exact expectation, Σ_y p(y | x) (∂ log p(y | x) / ∂θ)², one backward pass per row and class (what
  Matena & Raffel's own code computes for classifiers); refused where that is more than MAX_EXPECTED_PASSES per item;
- weighted-sum: (∂ Σ_rows Σ_y √p(y | x) log p(y | x) / ∂θ)², every class in one backward pass per item: FusionBench's
  fisher_merging's estimator (the square of a sum where the Fisher is a sum of squares; on its batches of 16 it
  merged our benchmark's experts 0.9-1.4 points better than the empirical Fisher at each floor tried,
  benchmarks/fisher_labels.py). The benchmark's fisher row gathers given and weighted-sum and chooses on validation.

Each item's squared gradient is that of the item's summed log-likelihood: items of one example give the per-example
Fisher, items that are batches give the squared batch gradients FusionBench's fisher_merging takes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .statistics import fisher_statistics

LABELS = ("given", "sampled", "expected", "weighted-sum")
MAX_EXPECTED_PASSES = 1024  # backward passes per item: a 10-class classifier takes 10, a causal LM 49k per token
Logits = Callable[[nn.Module, dict], Tensor]  # (model, an item's inputs) -> (N, C) logits at its scored rows


def fisher_of_labels(model: nn.Module, items: Iterable[tuple[dict, Tensor]], logits: Logits, labels: str = "given",
                     seed: int = 0, progress: Callable[[int], None] | None = None) -> tuple[dict[str, Tensor], int]:
    """The diagonal Fisher of `model`'s trainable parameters with `labels` (LABELS), and the number of items."""
    if labels == "given":
        return fisher_statistics(model, items, lambda m, inputs, y: _log_likelihood(logits(m, inputs), y), progress)
    if labels == "sampled":
        generator = torch.Generator().manual_seed(seed)

        def sampled(m: nn.Module, inputs: dict, _: Tensor) -> Tensor:
            z = logits(m, inputs)
            drawn = torch.multinomial(torch.softmax(z.detach().float(), -1), 1, generator=generator)[:, 0]
            return _log_likelihood(z, drawn)
        return fisher_statistics(model, items, sampled, progress)
    if labels == "expected":
        def expected(m: nn.Module, inputs: dict, _: Tensor) -> Tensor:
            # Σ_n Σ_y p_ny g_ny²: the cross terms of a row's expectation vanish (E_y[∂ log p] = ∂ Σ_y p = 0), so
            # each (row, class) is a term of its own, weighted by √p so that its square carries p
            log_p = torch.log_softmax(logits(m, inputs).float(), -1)  # (N, C)
            if log_p.numel() > MAX_EXPECTED_PASSES:
                raise UsageError(f"the expected Fisher of an item with {log_p.shape[0]} scored rows over "
                                 f"{log_p.shape[1]} classes takes {log_p.numel()} backward passes (at most "
                                 f"{MAX_EXPECTED_PASSES}). Fix: use sampled labels.")
            return (log_p.detach().exp().sqrt() * log_p).reshape(-1)
        return fisher_statistics(model, items, expected, progress)
    if labels == "weighted-sum":
        def weighted(m: nn.Module, inputs: dict, _: Tensor) -> Tensor:
            z = logits(m, inputs).float()
            return (torch.softmax(z, -1).detach().sqrt() * torch.log_softmax(z, -1)).sum()
        return fisher_statistics(model, items, weighted, progress)
    raise UsageError(f"Fisher labels {labels!r}: give one of {', '.join(LABELS)}.")


def _log_likelihood(z: Tensor, y: Tensor) -> Tensor:
    return -nn.functional.cross_entropy(z.float(), y, reduction="sum")
