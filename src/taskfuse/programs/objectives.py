"""What learned composition minimises, per task, from a head's logits.

- entropy: AdaMerging's surrogate on unlabeled inputs, the mean Shannon entropy of the predicted distribution
  (Yang et al. 2024, arXiv:2310.02575, Eq. 4): confident predictions on a task's inputs stand in for accuracy.
- cross_entropy: aTLAS's objective on labelled examples (Zhang et al. 2024, arXiv:2407.02880).
"""
from __future__ import annotations

import torch
from torch import Tensor


def entropy(logits: Tensor) -> Tensor:
    """Mean over the batch of H(softmax(logits)) = −Σ_c p_c log p_c, in nats; (B, C) → scalar."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return torch.nn.functional.cross_entropy(logits, labels)
