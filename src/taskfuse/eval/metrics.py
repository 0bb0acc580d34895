"""Classification scores."""
from __future__ import annotations

import torch


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predicted == labels).float().mean()) if len(labels) else float("nan")


def macro_f1(predicted: torch.Tensor, labels: torch.Tensor, num_labels: int) -> float:
    """Unweighted mean of per-class F1; a class never predicted nor present is left out, one missed scores 0."""
    scores = []
    for c in range(num_labels):
        tp = float(((predicted == c) & (labels == c)).sum())
        fp = float(((predicted == c) & (labels != c)).sum())
        fn = float(((predicted != c) & (labels == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else float("nan")
