"""Which examples a few-shot objective sees: aTLAS few-shot's k per class, and Self Positioning's probe set."""
from __future__ import annotations

from collections.abc import Sequence


def first_per_class(labels: Sequence[int], k: int) -> list[int]:
    """The rows of the first `k` examples of each class, in file order (the file's own order, so the choice is
    the same on every run and readable from the file)."""
    rows, taken = [], {}
    for i, label in enumerate(labels):
        if taken.get(label, 0) < k:
            taken[label] = taken.get(label, 0) + 1
            rows.append(i)
    return rows
