"""Progress for long commands: rich bars on a terminal, plain timestamped lines everywhere else.

Rich draws nothing while standard error is not a terminal (CI, `> log 2>&1`, a job scheduler), so a 25-minute
`taskfuse bench` would leave an empty log until it ends. There, each bar prints a line when it starts, when it
finishes, and otherwise at most every PLAIN_INTERVAL seconds.
"""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PLAIN_INTERVAL = 5.0


def progress_display(console: Console, label: str = "{task.fields[stage]}"):
    """A context manager with rich Progress's add_task/update; `label` names each bar (a rich format string)."""
    if console.is_terminal:
        return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=console)
    return PlainProgress(console, label)


class PlainProgress:
    def __init__(self, console: Console, label: str, interval: float = PLAIN_INTERVAL):
        self.console, self.label, self.interval = console, label, interval
        self.started = time.monotonic()
        self.bars: list[dict] = []

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str = "", total: float | None = None, **fields) -> int:
        self.bars.append({"description": description, "total": total, "completed": 0, "fields": fields,
                          "printed": None})
        return len(self.bars) - 1

    def update(self, task_id: int, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, **_) -> None:
        bar = self.bars[task_id]
        for key, value in (("completed", completed), ("total", total), ("description", description)):
            if value is not None:
                bar[key] = value
        now = time.monotonic()
        finished = bar["total"] is not None and bar["completed"] >= bar["total"]
        if bar["printed"] is None or finished or now - bar["printed"] >= self.interval:
            bar["printed"] = now
            self._print(bar, now)

    def _print(self, bar: dict, now: float) -> None:
        label = self.label.replace("{task.fields[stage]}", str(bar["fields"].get("stage", "")))
        done = f"{bar['completed']:g}/{bar['total']:g}" if bar["total"] is not None else f"{bar['completed']:g}"
        self.console.print(f"{label.strip()} {done} [{now - self.started:.0f} s] {bar['description']}",
                           markup=False, highlight=False, soft_wrap=True)
        self.console.file.flush()  # a log file or pipe is block-buffered: show each line as it happens
