"""aTLAS over Iso-CTS with its coefficients averaged over the last half of its steps, beside its last iterate.

The benchmark's best learned row (aTLAS learned from Iso-CTS, 98.07 % in bench-full, 98.06 % on average over five
learning seeds) is 0.05 points short of issue 12's best data-free row + 2 points. Its coefficients end wherever the
last validation batches pushed them; here the same runs (experts, start, data, steps, rate and the five seeds of
benchmarks/learning_seed_spread.py) also write the mean of their last 50 iterates (programs/tail_average.py), and
both are scored on validation (the data the coefficients are fitted to), on the training split (which only the
experts saw: the judge of whether to average) and on test.

    python benchmarks/tail_averaged_over_merge.py                   # full zoo, seeds 0-4, 100 steps
    python benchmarks/tail_averaged_over_merge.py --variant tiny --steps 2 --out /tmp/tail

Writes benchmarks/results/tail-averaged-over-merge/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

import json
from pathlib import Path

from taskfuse.bench.study_script import run_study_script
from taskfuse.bench.tail_averaged_over_merge import tail_averaged_over_merge

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "tail-averaged-over-merge"
BENCH_FULL = HERE / "results" / "bench-full" / "result.json"
DATA = ("validation split (labelled): the learning; training split (the experts' own): the scores the choice to "
        "average is judged by; test split: the scores reported")


def main() -> None:
    committed = json.loads(BENCH_FULL.read_text())
    run_study_script(__doc__.splitlines()[0], OUT,
                     lambda variant, work, say, steps: tail_averaged_over_merge(variant, work, say, steps, committed),
                     DATA, markdown)


def markdown(result: dict) -> str:
    tasks, start = result["tasks"], result["start"]
    lines = ["| row | validation normalised % | train normalised % | test normalised % | "
             + " | ".join(f"{t} (test) %" for t in tasks) + " |", "|" + "---|" * (len(tasks) + 4)]

    def line(name: str, record: dict) -> str:
        return (f"| {name} | {100 * record['validation']['average']['normalized']:.2f} | "
                f"{100 * record['train']['average']['normalized']:.2f} | "
                f"{100 * record['test']['average']['normalized']:.2f} | "
                + " | ".join(f"{100 * record['test']['test_normalized'][t]:.1f}" for t in tasks) + " |")

    lines.append(line(f"{result['over']} {result['over_params']} (start, no seed)", start))
    for row in result["rows"]:
        lines += [line(f"{result['method']}, seed {row['seed']}, last iterate", row["last"]),
                  line(f"{result['method']}, seed {row['seed']}, mean of the last {row['tail']['steps_averaged']}",
                       row["averaged"])]
    text = [f"Normalised accuracy (% of each task's expert); {result['method']} learned once per seed, the mean of "
            f"its last {100 * result['fraction']:.0f} % of iterates and its last iterate written from the same run.",
            "", *lines, ""]
    for split in ("validation", "train", "test"):
        s = result["summary"][split]
        a, b, g = s["averaged"], s["last"], s["gain_of_averaging"]
        text.append(f"- {split}: averaged {100 * a['mean']:.2f} % on average over {a['n']} seeds "
                    f"({100 * a['min']:.2f} to {100 * a['max']:.2f}), last iterate {100 * b['mean']:.2f} % "
                    f"({100 * b['min']:.2f} to {100 * b['max']:.2f}); averaging {100 * g['mean']:+.2f} points per "
                    f"seed ({100 * g['min']:+.2f} to {100 * g['max']:+.2f}); the start + 2 points "
                    f"({100 * s['threshold']:.2f} %) reached by {s['seeds_reaching']['averaged']} averaged and "
                    f"{s['seeds_reaching']['last']} last-iterate seeds.")
    judge = result["summary"]["judge"]
    chosen = judge["chosen_per_seed_on_test"]
    text.append(f"- the judge ({judge['split']} split): prefers the average on average over the seeds: "
                f"{'yes' if judge['prefers_average'] else 'no'}; seed by seed on {judge['seeds_preferring_average']} "
                f"of {chosen['n']}; the iterate it chooses seed by seed scores {100 * chosen['mean']:.2f} % on test "
                f"on average ({100 * chosen['min']:.2f} to {100 * chosen['max']:.2f}).")
    full = result["bench_full"]
    if full is not None:
        seed0 = next(r for r in result["rows"] if r["seed"] == 0)
        text.append(f"- bench-full's row (seed 0, last iterate, at {full['commit'][:7]}): "
                    f"{100 * full['normalized']:.2f} %; seed 0's last iterate here: "
                    f"{100 * seed0['last']['test']['average']['normalized']:.2f} %.")
    made = f"`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s"
    return "\n".join(text) + f"\n\n{made}\n"


if __name__ == "__main__":
    main()
