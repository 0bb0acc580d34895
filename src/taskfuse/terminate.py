"""SIGTERM, what job schedulers and `kill` send, ends a taskfuse process the way Ctrl-C does.

Python's default for SIGTERM is to die on the spot, so no `finally` runs and a merge, report or expert being
staged stays on disk as `.NAME.partial-PID/`. Here it raises SystemExit instead: every cleanup on the way out
runs, and the exit status is the conventional 128 + 15. A second SIGTERM during that cleanup is ignored (a
scheduler that loses patience sends SIGKILL, and the next run removes the stage of a dead process).
"""
from __future__ import annotations

import signal
import threading

EXIT_STATUS = 128 + signal.SIGTERM


def _raise_exit(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(EXIT_STATUS)


def exit_cleanly_on_sigterm() -> None:
    """Install the handler; only the main thread may (signals are delivered there)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_exit)
