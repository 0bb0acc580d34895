"""Learned and data-free merges of the benchmark's tasks as a user's sequence classifiers: eight
BertForSequenceClassification fine-tunes of all-MiniLM-L6-v2, each with its own head (bench/classifier_zoo.py),
merged by `taskfuse merge` (task arithmetic, TIES, Iso-CTS) and by `taskfuse learn --spec` (AdaMerging task- and
layer-wise, aTLAS, aTLAS from the Iso-CTS merge) as bench/classifier_study.py says.

    python benchmarks/classifier_learning.py                 # full zoo: the classifiers are trained once (cached)
    python benchmarks/classifier_learning.py --variant tiny

Writes benchmarks/results/classifier-learning/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

from pathlib import Path

from taskfuse.bench.classifier_study import run_classifier_study
from taskfuse.bench.study_script import run_study_script

OUT = Path(__file__).resolve().parent / "results" / "classifier-learning"
DATA = ("validation split: learning (texts for AdaMerging, texts and labels for aTLAS) and the data-free rows' "
        "parameters; test split: every score")


def main() -> None:
    run_study_script(__doc__.splitlines()[0], OUT, run_classifier_study, DATA, markdown)


def markdown(result: dict) -> str:
    tasks = result["tasks"]
    lines = ["| row | kind | chosen | avg normalised % | avg accuracy % | learning s | "
             + " | ".join(f"{t} %" for t in tasks) + " |", "|" + "---|" * (len(tasks) + 6)]
    own = result["own_classifiers"]["test"]
    lines.append("| each task's own classifier | | | 100.0 | " + f"{100 * sum(own.values()) / len(own):.1f} | | "
                 + " | ".join(f"{100 * own[t]:.1f}" for t in tasks) + " |")
    for row in result["rows"]:
        chosen = row.get("params", "")
        seconds = row["seconds"] if row["kind"] == "learned" else ""
        lines.append(f"| {row['method']} | {row['kind']} | {chosen} | {100 * row['average']['normalized']:.1f} | "
                     f"{100 * row['average']['accuracy']:.1f} | {seconds} | "
                     + " | ".join(f"{100 * row['accuracy'][t]:.1f}" for t in tasks) + " |")
    return ("The benchmark's tasks as sequence classifiers (BertForSequenceClassification fine-tunes of "
            "all-MiniLM-L6-v2, each with its own head): test accuracy per task, and on average normalised by each "
            "task's own classifier. Data-free rows choose their parameters on the validation split; learned rows "
            "learn on it (`taskfuse learn --spec`).\n\n" + "\n".join(lines) +
            f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s\n")


if __name__ == "__main__":
    main()
