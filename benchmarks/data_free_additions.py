"""Data-free methods added after the committed full run, scored on the full experts and splits as its rows are.

WUDI-Merging, MagMax, KnOTS, SCE, RAM and Multi-SLERP (of the weights and of the task vectors) beside task arithmetic
and Iso-CTS merged again in the same run, and over the zoo's LoRA experts beside task arithmetic, TIES, TSV-M and
Iso-CTS.

    python benchmarks/data_free_additions.py                 # full zoo (built once, cached)
    python benchmarks/data_free_additions.py --variant tiny --out /tmp/additions

Writes benchmarks/results/data-free-additions/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

import json
from pathlib import Path

from taskfuse.bench.data_free_additions import data_free_additions
from taskfuse.bench.study_script import run_study_script

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "data-free-additions"
BENCH_FULL = HERE / "results" / "bench-full" / "result.json"
DATA = "validation split: each method's parameters (no data in the merge); test split: every score"


def main() -> None:
    committed = json.loads(BENCH_FULL.read_text())
    run_study_script(__doc__.splitlines()[0], OUT,
                     lambda variant, work, say, steps: data_free_additions(variant, work, say, committed),
                     DATA, markdown)


def markdown(result: dict) -> str:
    tasks = result["tasks"]
    header = ["| row | chosen on validation | avg normalised % | avg accuracy % | merge s | "
              + " | ".join(f"{t} %" for t in tasks) + " |", "|" + "---|" * (len(tasks) + 5)]

    def line(row: dict, name: str) -> str:
        chosen = next(t for t in row.get("trials", [row]) if t["params"] == row["params"])
        return (f"| {name} | {row['params']} | {100 * row['average']['normalized']:.2f} | "
                f"{100 * row['average']['accuracy']:.1f} | {chosen['merge_seconds']} | "
                + " | ".join(f"{100 * row['test_normalized'][t]:.1f}" for t in tasks) + " |")

    def table(named: list[tuple[dict, str]]) -> list[str]:
        return header + [line(row, name) for row, name in sorted(named, key=lambda n: -n[0]["average"]["normalized"])]

    full = table([(r, r["method"]) for r in result["rows"]]
                 + [(a, f"{a['method']} (bench-full's choice, scored again)") for a in result["anchors"]])
    lora = table([(r, r["method"]) for r in result["lora_rows"]])
    again = "; ".join(f"{a['method']} {100 * a['committed_normalized']:.2f} %" for a in result["anchors"])
    trials = ["| section | method | params | validation normalised % | merge s |", "|---|---|---|---|---|"]
    trials += [f"| {section} | {row['method']} | {t['params']} | {100 * t['validation_normalized']:.2f} | "
               f"{t['merge_seconds']} |" for section, key in (("full", "rows"), ("LoRA", "lora_rows"))
               for row in result[key] for t in row["trials"]]
    return ("Test scores normalised by each task's full expert (% of its accuracy); each method's parameters chosen "
            "on the validation split.\n\nOver the full experts:\n\n" + "\n".join(full) +
            f"\n\nThe committed full run ({result['committed']['commit']}): {again}.\n\n"
            "Over the LoRA experts (the zoo's PEFT adapters as the spec's models):\n\n" + "\n".join(lora) +
            "\n\nEvery grid point:\n\n" + "\n".join(trials) +
            f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s\n")


if __name__ == "__main__":
    main()
