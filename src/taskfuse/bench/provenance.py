"""What produced a result: the command line, the code's commit and the machine, recorded beside every number."""
from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def command_line() -> str:
    return shlex.join(["taskfuse" if Path(sys.argv[0]).name == "taskfuse" else sys.argv[0], *sys.argv[1:]])


def code_commit() -> dict:
    """The git commit of the taskfuse source that ran, and whether it had uncommitted changes; None outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_DIR))
    return {"commit": commit, "uncommitted_changes": bool(dirty) if commit else None}


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": psutil.cpu_count(logical=True), "torch_threads": torch.get_num_threads(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "processor": platform.processor()}
