"""The order in which `taskfuse learn --spec` visits a task's examples."""
from __future__ import annotations

from collections.abc import Iterator

import torch


def shuffled_batches(count: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Row indices of `count` examples in batches of `batch_size`, endlessly, in a new seeded order every pass (the
    last batch of a pass may be smaller)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(count, generator=g).tolist()
        for start in range(0, count, batch_size):
            yield order[start:start + batch_size]
