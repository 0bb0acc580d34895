"""Learned coefficients started from the best data-free merge (bench/learned_over_merge.py), Iso-CTS.

The benchmark's aTLAS rows learn from Λ = 0 over the raw task vectors and end level with Iso-CTS (95.9-96.0 %
against 96.1 % normalised), AdaMerging's from 0.3 near task arithmetic. Here the same learning starts from
Iso-CTS's merge, at the scale bench-full chose for
it on validation, and learns per tensor how much more or less of that merge and of each expert's own vector to
take. Judged on the full zoo's test split from the folder the two replayable specs write, beside the merge it
started from, scored in the same run.

    python benchmarks/learned_over_merge.py                      # aTLAS, aTLAS few-shot, AdaMerging: 100 steps
    python benchmarks/learned_over_merge.py --methods atlas atlas_fewshot --variant tiny --steps 5

Writes benchmarks/results/learned-over-merge/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from taskfuse.bench.learned import learned_method
from taskfuse.bench.learned_over_merge import OVER_MERGE_LR, OverMerge, over_merge_row, scored, write_start
from taskfuse.bench.provenance import code_commit, command_line, machine, write_result
from taskfuse.bench.references import reference_scores
from taskfuse.eval.encoder import load_encoder
from taskfuse.eval.harness import Evaluator
from taskfuse.io.output import check_output_dir
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import variant_named

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "learned-over-merge"
BENCH_FULL = HERE / "results" / "bench-full" / "result.json"


def bench_full_choice(method: str) -> dict:
    """The parameters bench-full chose on validation for `method` (its committed result)."""
    rows = {m["method"]: m for m in json.loads(BENCH_FULL.read_text())["methods"]}
    return rows[method]["params"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--over", default="iso_cts", help="the data-free method to start from")
    parser.add_argument("--methods", nargs="+", default=["atlas", "atlas_fewshot", "adamerging_layer"])
    parser.add_argument("--steps", type=int, default=None, help="default: each method's own (100)")
    parser.add_argument("--lr", type=float, default=OVER_MERGE_LR)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    check_output_dir(args.out, "report")  # before minutes of learning, not after them
    started, code = time.perf_counter(), code_commit()
    zoo = build_zoo(variant_named(args.variant))
    test = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "test")
    experts = reference_scores(zoo, test)["expert"]
    over = OverMerge(args.over, bench_full_choice(args.over))
    rows = []
    with tempfile.TemporaryDirectory(prefix="taskfuse-over-merge-") as work:
        start = Path(work) / "start"
        start_spec, start_seconds = write_start(zoo, over, start)
        anchor = {"method": over.method, "params": over.params, "spec": start_spec,
                  "seconds": {"merge": round(start_seconds, 1)}, **scored(test.score(load_encoder(start)), experts)}
        for name in args.methods:
            method = learned_method(name, args.steps, args.lr)
            print(f"{name} from {over.method} {over.params}", flush=True)
            rows.append(over_merge_row(zoo, method, over, start, test, experts, lambda done, total, loss: print(
                f"  step {done}/{total} loss {loss:.4f}", flush=True) if done % 10 == 0 or done == total else None))
            print(f"  {rows[-1]['method']}: {100 * rows[-1]['average']['normalized']:.1f} % normalised "
                  f"(the merge it started from: {100 * anchor['average']['normalized']:.1f} %)", flush=True)
    out = {"command": command_line(), "code": code, "machine": machine(), "variant": args.variant,
           "seconds": round(time.perf_counter() - started, 1), "over": anchor, "rows": rows}
    write_result(args.out, out, markdown(out))
    print(markdown(out))


def markdown(result: dict) -> str:
    tasks = list(result["over"]["test_normalized"])
    lines = ["| row | " + " | ".join(tasks) + " | avg normalized % | learn s |", "|" + "---|" * (len(tasks) + 3)]
    for row in [{**result["over"], "method": f"{result['over']['method']} {result['over']['params']} (start)"},
                *result["rows"]]:
        cells = [f"{100 * row['test_normalized'][t]:.1f}" for t in tasks]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {100 * row['average']['normalized']:.1f} | "
                     f"{row['seconds'].get('learn', '')} |")
    return ("Normalised test accuracy per task (% of the task's expert).\n\n" + "\n".join(lines) +
            f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s\n")


if __name__ == "__main__":
    main()
