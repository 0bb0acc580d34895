"""Memory while learning merge coefficients, each learned row in a process of its own (bench/learning_memory.py),
against issue 12's bound: base + T task vectors + the activations of one batch + 20 %.

The rows are bench-full's rows that learn in the differentiable view: the six from the base, and the three that
start from the best data-free merge (Iso-CTS at the scale bench-full chose on validation), each with its own
steps, learning rate and data. Accuracy is bench-full's business; this measures only memory.

    python benchmarks/learning_memory.py                                  # the nine rows, 100 steps each
    python benchmarks/learning_memory.py --step recomputed merged-once    # each row with both gradient steps
    python benchmarks/learning_memory.py --variant tiny --steps 3 --methods atlas --out /tmp/m

Each row learns with the gradient step the benchmark's rows take (programs/learning_loop.py DEFAULT_STEP: the
memory-lean one, which recomputes each layer in backward, programs/recomputed_step.py); `--step` chooses, among them
merged-once, which merges θ(Λ) once per step (faster; holds θ's gradient and every layer's activations).

Writes benchmarks/results/learning-memory/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from taskfuse.bench.learned import LEARNED, learned_method
from taskfuse.bench.learned_over_merge import OVER_MERGE_LR, OVER_MERGE_ROWS, OverMerge, write_start
from taskfuse.bench.learning_memory import measure_row
from taskfuse.bench.provenance import code_commit, command_line, machine
from taskfuse.io.output import staged_output
from taskfuse.programs.learning_loop import DEFAULT_STEP, STEPS
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import variant_named

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "learning-memory"
BENCH_FULL = HERE / "results" / "bench-full" / "result.json"
OVER = "iso_cts"


def child(args: argparse.Namespace) -> None:
    """One row, alone in this process: its measurement as one JSON line on stdout."""
    zoo = build_zoo(variant_named(args.variant))
    over = args.start is not None
    method = learned_method(args.child, args.steps, OVER_MERGE_LR if over else None)
    row = measure_row(zoo, method, args.start, args.step[0])
    if over:
        row["method"] = f"{method.name} over {OVER}"
    print(json.dumps(row), flush=True)


def run_child(args: argparse.Namespace, name: str, start: Path | None, step: str) -> dict:
    command = [sys.executable, __file__, "--child", name, "--variant", args.variant, "--step", step]
    command += ["--steps", str(args.steps)] if args.steps else []
    command += ["--start", str(start)] if start else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} ({step}) failed in its own process (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def over_params(variant: str) -> dict:
    """Iso-CTS's parameters as bench-full chose them on validation (its committed result); the tiny zoo for tests
    has no committed choice and takes the method's default scale."""
    if variant != "full":
        return {"scale": 1.5}
    rows = {m["method"]: m for m in json.loads(BENCH_FULL.read_text())["methods"]}
    return rows[OVER]["params"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--methods", nargs="+", default=list(LEARNED), help="rows learnt from the base")
    parser.add_argument("--over-methods", nargs="*", default=list(OVER_MERGE_ROWS.values()),
                        help="rows learnt from the Iso-CTS merge")
    parser.add_argument("--steps", type=int, default=None, help="default: each method's own (100)")
    parser.add_argument("--step", nargs="+", choices=list(STEPS), default=[DEFAULT_STEP],
                        help=f"the gradient steps to measure each row with (default: the rows' own, {DEFAULT_STEP})")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    started, code = time.perf_counter(), code_commit()
    zoo = build_zoo(variant_named(args.variant))  # trains nothing when the zoo is cached; fails early when not
    rows = []
    for name, step in itertools.product(args.methods, args.step):
        print(f"{name}, step {step} ...", flush=True)
        rows.append(run_child(args, name, None, step))
        print(line(rows[-1]), flush=True)
    if args.over_methods:
        with tempfile.TemporaryDirectory(prefix="taskfuse-learning-memory-") as work:
            params = over_params(args.variant)
            write_start(zoo, OverMerge(OVER, params), Path(work) / "start")
            for name, step in itertools.product(args.over_methods, args.step):
                print(f"{name} over {OVER} {params}, step {step} ...", flush=True)
                rows.append(run_child(args, name, Path(work) / "start", step))
                print(line(rows[-1]), flush=True)
    out = {"command": command_line(), "code": code, "machine": machine(), "variant": args.variant,
           "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    with staged_output(args.out, "report") as stage:
        (stage / "result.json").write_text(json.dumps(out, indent=2) + "\n")
        (stage / "results.md").write_text(markdown(out))
    print(markdown(out))


def line(row: dict) -> str:
    return (f"  RSS grew {row['rss_added_mib']} MiB (loop {row['loop_rss_added_mib']}, held "
            f"{row.get('loop_held_added_mib')}), bound {row['bound_mib']} MiB ({'within' if row['within'] else 'over'})")


def markdown(result: dict) -> str:
    lines = ["| row | step | base | task vectors | one batch's activations (task) | bound | RSS grew | "
             "of it, the loop | the loop, held | within | seconds | loss, last 10 steps |", "|---" * 12 + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['step']} | {r['base_mib']} | {r['task_vectors_mib']} | "
                     f"{r['activations_mib']} ({r['activations_task']}) | {r['bound_mib']} | {r['rss_added_mib']} | "
                     f"{r['loop_rss_added_mib']} | {r.get('loop_held_added_mib', '')} | "
                     f"{'yes' if r['within'] else '**no**'} | {r['seconds']} | {r['loss_last_10_mean']} |")
    return ("Memory while learning, MiB, each row in a fresh process. Bound: 1.2 × (base + task vectors + one "
            "batch's saved activations). RSS grew: peak over the whole learning (loading the experts, building "
            "the view, the loop) above the process's RSS before it; the loop: the same from step 2 on; held: the "
            "loop's peak of the bytes malloc has handed out and not had back (glibc's mallinfo2) plus mapped files' "
            "resident pages (the base's weights), above the same count before the learning: RSS above it is freed "
            "memory the allocator kept resident. Judged on RSS. Step: recomputed (the benchmark's rows') "
            "recomputes each layer in backward and hands freed heap pages back after each layer's backward "
            "(programs/recomputed_step.py); merged-once merges θ(Λ) once per step (programs/learn.py). Seconds: the "
            "learning's.\n\n"
            + "\n".join(lines) + f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, "
            f"{result['seconds']} s\n")


if __name__ == "__main__":
    main()
