"""Background work in submission order, bounded by the bytes it holds: the executor's read-ahead and write queue."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, wait
from typing import Any


class InFlight:
    """Futures in submission order whose sizes total at most `limit` bytes, or a single one of any size (so a
    tensor larger than the limit still goes through, alone)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._futures: deque[tuple[Future, int]] = deque()
        self._bytes = 0

    def __bool__(self) -> bool:
        return bool(self._futures)

    def has_room(self, size: int) -> bool:
        return not self._futures or self._bytes + size <= self.limit

    def add(self, future: Future, size: int) -> None:
        self._futures.append((future, size))
        self._bytes += size

    def pop_oldest(self) -> Any:
        """The oldest future's result (waiting for it; its exception is raised here)."""
        future, size = self._futures.popleft()
        self._bytes -= size
        return future.result()

    def cancel(self) -> None:
        """Cancel what has not started and wait for what has."""
        futures = [future for future, _ in self._futures]
        self._futures.clear()
        self._bytes = 0
        for future in futures:
            future.cancel()
        wait(futures)
