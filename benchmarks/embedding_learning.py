"""The benchmark's eight experts as a user's embedding models, learned by `taskfuse learn --spec` from their folders
and a JSONL of labelled texts per task (bench/embedding_study.py): aTLAS, aTLAS few-shot, Self Positioning and aTLAS
from the Iso-CTS merge, beside task arithmetic and Iso-CTS at the full benchmark's chosen parameters, each judged by
the benchmark's heads on the test split and set beside the same row of the committed full benchmark (which learns
through the zoo's fixed heads).

    python benchmarks/embedding_learning.py                  # the full zoo (cached), 100 steps per learned row
    python benchmarks/embedding_learning.py --variant tiny --steps 5

Writes benchmarks/results/embedding-learning/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

from pathlib import Path

from taskfuse.bench.embedding_study import run_embedding_study
from taskfuse.bench.study_script import run_study_script

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "embedding-learning"
BENCH_FULL = HERE / "results" / "bench-full" / "result.json"
DATA = "validation split: learning (texts, each class as its label prompt); test split: every score"


def main() -> None:
    run_study_script(__doc__.splitlines()[0], OUT, lambda variant, work, progress, steps: run_embedding_study(
        variant, work, BENCH_FULL, progress, steps), DATA, markdown)


def markdown(result: dict) -> str:
    tasks = result["tasks"]
    lines = ["| row | kind | avg normalised % | the zoo's row (fixed heads) % | avg accuracy % | learning s | "
             + " | ".join(f"{t} %" for t in tasks) + " |", "|" + "---|" * (len(tasks) + 6)]
    for row in result["rows"]:
        zoo = row.get("zoo_row_normalized")
        seconds = row["seconds"] if row["kind"] == "learned" else ""
        lines.append(f"| {row['method']} | {row['kind']} | {100 * row['average']['normalized']:.1f} | "
                     f"{'' if zoo is None else f'{100 * zoo:.1f}'} | {100 * row['average']['accuracy']:.1f} | "
                     f"{seconds} | " + " | ".join(f"{100 * row['test'][t]['accuracy']:.1f}" for t in tasks) + " |")
    return ("The benchmark's experts as a user's embedding models (`taskfuse learn --spec` on a JSONL of labelled "
            "texts per task, each class written as its prompt and embedded by the merged model): test accuracy per "
            "task, and on average normalised by each task's expert, beside the committed full benchmark's same row, "
            "which learns through the zoo's fixed heads.\n\n" + "\n".join(lines) +
            f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s\n")


if __name__ == "__main__":
    main()
