"""The user cache taskfuse keeps between runs: frozen benchmark data and the expert zoo."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$TASKFUSE_CACHE, else $XDG_CACHE_HOME/taskfuse, else ~/.cache/taskfuse."""
    if os.environ.get("TASKFUSE_CACHE"):
        return Path(os.environ["TASKFUSE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taskfuse"
