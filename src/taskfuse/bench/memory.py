"""Peak resident memory of a stretch of work inside a longer process (ru_maxrss only knows the whole process)."""
from __future__ import annotations

import threading

import psutil


class RssPeak:
    """`with RssPeak() as m: ...` then `m.added` is the largest RSS seen above the RSS at entry, in bytes.

    A thread samples every `interval` seconds: a peak shorter than that (one backward pass's activations last far
    longer) could be missed, so the figure is a lower bound.
    """

    def __init__(self, interval: float = 0.02):
        self.interval, self.process = interval, psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> "RssPeak":
        self.start = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def added(self) -> int:
        return self.peak - self.start
