"""What produced a result: the command line, the code's commit and the machine, recorded beside every number."""
from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from ..io.output import staged_output

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
    """The machine, with a measured speed: the same "2-core machine" has run this project's benchmarks at half or
    twice the speed on different days, so wall times are only comparable beside its matrix-multiply rate."""
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": psutil.cpu_count(logical=True), "torch_threads": torch.get_num_threads(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "processor": cpu_model(),
            "matmul_gflops": matmul_gflops()}


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform module says (often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def matmul_gflops(size: int = 1024, seconds: float = 0.5) -> dict[str, float]:
    """float32 and bfloat16 matrix-multiply throughput at torch's thread count, best of repeated products for about
    `seconds` each. bfloat16 separates machines with bfloat16 matrix units (several times float32's rate) from those
    without (slower than float32)."""
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        best, spent = float("inf"), 0.0
        while spent < seconds:
            begun = time.perf_counter()
            a @ b
            took = time.perf_counter() - begun
            best, spent = min(best, took), spent + took
        rates[str(dtype).removeprefix("torch.")] = round(2 * size ** 3 / best / 1e9, 1)
    return rates


def write_result(out: Path, result: dict, markdown: str | None = None, indent: int = 2) -> Path:
    """result.json (and results.md, when given) in the report folder `out`, staged: both files or neither, and a
    folder taskfuse did not write is refused, not replaced (a study checks `out` with check_output_dir first)."""
    with staged_output(out, "report") as stage:
        (stage / "result.json").write_text(json.dumps(result, indent=indent) + "\n")
        if markdown is not None:
            (stage / "results.md").write_text(markdown)
    return Path(out)
