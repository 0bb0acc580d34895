"""Whether to tail-average aTLAS over Iso-CTS, chosen by 4-fold cross-validation on the validation split.

benchmarks/tail_averaged_over_merge.py measured the mean of the last 50 iterates beside the last iterate (98.24 %
against 98.06 % on test over five learning seeds) but had no split that could choose between them without test.
Here the coefficients learn from three folds of each task's validation split and both the average and the last
iterate are scored on the fourth, four times over; pooled, every validation example is scored once by a run that
never learned from it. Test scores of each fold's run are recorded beside, never used to choose.

    python benchmarks/tail_average_cross_validated.py                   # full zoo, 4 folds, 100 steps
    python benchmarks/tail_average_cross_validated.py --variant tiny --steps 2 --out /tmp/cv

Writes benchmarks/results/tail-average-cross-validated/result.json and results.md (command, commit and machine).
"""
from __future__ import annotations

import json
from pathlib import Path

from taskfuse.bench.study_script import run_study_script
from taskfuse.bench.tail_average_cross_validated import HELD_OUT, KINDS, tail_average_cross_validated

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "tail-average-cross-validated"
BENCH_FULL = HERE / "results" / "bench-full" / "result.json"
DATA = ("validation split (labelled), cut into class-stratified folds: each run learns from all but one and is "
        "scored on that one, the scores that choose whether to average; test split: each run's scores, recorded only")


def main() -> None:
    committed = json.loads(BENCH_FULL.read_text())
    run_study_script(__doc__.splitlines()[0], OUT,
                     lambda variant, work, say, steps: tail_average_cross_validated(variant, work, say, steps,
                                                                                     committed),
                     DATA, markdown)


def markdown(result: dict) -> str:
    tasks, s = result["tasks"], result["summary"]
    lines = ["| run | held-out fold normalised % | test normalised % | learned from (examples) |", "|---|---|---|---|"]
    for row in result["rows"]:
        for kind in KINDS:
            name = f"mean of the last {row['tail']['steps_averaged']}" if kind == "averaged" else "last iterate"
            lines.append(f"| fold {row['fold']}, {name} | "
                         f"{100 * row[kind][HELD_OUT]['average']['normalized']:.2f} | "
                         f"{100 * row[kind]['test']['average']['normalized']:.2f} | "
                         f"{sum(row['learned_from'].values())} |")
    pools = s["pooled"]
    lines += ["", "| pooled over the held-out folds | average % | " + " | ".join(f"{t} %" for t in tasks) + " |",
              "|" + "---|" * (len(tasks) + 2)]
    for kind in KINDS:
        lines.append(f"| {kind} | {100 * pools[kind]['average']:.2f} | "
                     + " | ".join(f"{100 * pools[kind]['normalized'][t]:.1f}" for t in tasks) + " |")
    fold, test = s["per_fold_gain"], s["test"]
    text = [f"Normalised accuracy (% of each task's expert on the same examples); {result['method']} "
            f"{result['over_params']}, {result['steps']} steps at lr {result['lr']}, learning seed {result['seed']}, "
            f"{result['folds']} folds; averaged = the mean of the last {100 * result['fraction']:.0f} % of iterates.",
            "", *lines, "",
            f"- the choice: averaging {100 * s['gain_of_averaging']:+.2f} points pooled over the held-out folds, so "
            f"{'average' if s['prefers_average'] else 'keep the last iterate'}; fold by fold "
            f"{100 * fold['mean']:+.2f} points on average ({100 * fold['min']:+.2f} to {100 * fold['max']:+.2f}), "
            f"the average preferred in {s['folds_preferring_average']} of {fold['n']} folds.",
            f"- test, recorded only: averaged {100 * test['averaged']['mean']:.2f} %, last iterate "
            f"{100 * test['last']['mean']:.2f} % on average over the folds' runs; averaging "
            f"{100 * test['gain_of_averaging']['mean']:+.2f} points ({100 * test['gain_of_averaging']['min']:+.2f} "
            f"to {100 * test['gain_of_averaging']['max']:+.2f})."]
    made = f"`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s"
    return "\n".join(text) + f"\n\n{made}\n"


if __name__ == "__main__":
    main()
