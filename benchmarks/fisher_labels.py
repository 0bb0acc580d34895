"""Fisher merging of the zoo's experts with each way of taking the Fisher (programs/fisher_labels.py).

The benchmark's fisher row takes the empirical Fisher (the validation split's own labels, one squared gradient per
example) and ends 1.5 points below FusionBench's fisher_merging, which squares gradients summed over batches of 16.
This study asks whether the estimator is why: the same merge (floor 1e-6, each Fisher scaled to unit norm) from
the Fisher with the data's labels per example, with labels drawn from each expert's own distribution, with the
exact expectation over its classes (the true Fisher, as Matena & Raffel's code takes it), and with the data's
labels over batches of 16 in a seeded order (FusionBench's estimator). Judged on the full zoo's test split.

    python benchmarks/fisher_labels.py                       # the four estimators, full zoo (about 15 minutes)
    python benchmarks/fisher_labels.py --variant tiny

Writes benchmarks/results/fisher-labels/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from taskfuse import api
from taskfuse.bench.learned_over_merge import scored
from taskfuse.bench.learned_row import TENSOR_RULES
from taskfuse.bench.provenance import code_commit, command_line, machine
from taskfuse.bench.references import reference_scores
from taskfuse.bench.statistics_rows import validation_data
from taskfuse.eval.encoder import Encoded, load_encoder, sentence_embedding
from taskfuse.eval.harness import Evaluator
from taskfuse.io.output import staged_output
from taskfuse.io.statistics_file import save_statistics
from taskfuse.programs.fisher_labels import fisher_of_labels
from taskfuse.programs.statistics import normalized_fisher
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import variant_named

OUT = Path(__file__).resolve().parent / "results" / "fisher-labels"
FLOOR = 1e-6  # the benchmark's fisher row's and the side by side's
# (row, labels, examples per item): per example in length order as the benchmark's row; batches in a seeded order
ESTIMATORS = (("the data's labels, per example (empirical; the benchmark's row)", "given", 1),
              ("labels drawn from the expert, per example (sampled true Fisher)", "sampled", 1),
              ("expectation over the expert's classes, per example (true Fisher)", "expected", 1),
              ("the data's labels, squared sums over batches of 16 (FusionBench's)", "given", 16))


def items(data: Encoded, size: int):
    order = None if size == 1 else torch.randperm(len(data.ids), generator=torch.Generator().manual_seed(0)).tolist()
    for rows, ids, mask in data.batches(size, order):
        yield {"ids": ids, "mask": mask}, data.labels[rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    started, code = time.perf_counter(), code_commit()
    zoo = build_zoo(variant_named(args.variant))
    test = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "test")
    experts = reference_scores(zoo, test)["expert"]
    data = validation_data(zoo)
    rows = []
    with tempfile.TemporaryDirectory(prefix="taskfuse-fisher-labels-") as work:
        for i, (name, labels, size) in enumerate(ESTIMATORS):
            print(name, flush=True)
            gathering, models = time.perf_counter(), []
            for t, expert in zoo.experts.items():
                head = expert.head()
                model = load_encoder(expert.model_dir)
                fisher, _ = fisher_of_labels(
                    model, items(data[t], size),
                    lambda m, inputs, head=head: head(sentence_embedding(m, inputs["ids"], inputs["mask"])), labels)
                folder = save_statistics(Path(work) / f"{i}-{t}", normalized_fisher(fisher)[0], "fisher",
                                         {"model": str(expert.model_dir), "task": t, "labels": labels, "items": size})
                models.append({"path": str(expert.model_dir), "statistics": str(folder)})
                print(f"  {t}", flush=True)
            gathered = time.perf_counter() - gathering
            spec = {"method": "fisher", "base": str(zoo.base_dir), "seed": zoo.variant.recipe.seed,
                    "dtype": "float32", "models": models, "params": {"floor": FLOOR}, "tensor_rules": TENSOR_RULES}
            api.merge(spec, Path(work) / f"merged-{i}")
            rows.append({"method": name, "labels": labels, "examples_per_item": size,
                         "seconds": {"statistics": round(gathered, 1)},
                         **scored(test.score(load_encoder(Path(work) / f"merged-{i}")), experts)})
            print(f"  {100 * rows[-1]['average']['normalized']:.2f} % normalised, statistics "
                  f"{rows[-1]['seconds']['statistics']} s", flush=True)
    out = {"command": command_line(), "code": code, "machine": machine(), "variant": args.variant,
           "data": "each expert's validation split (labelled); scores: test split", "floor": FLOOR,
           "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    with staged_output(args.out, "report") as stage:
        (stage / "result.json").write_text(json.dumps(out, indent=2) + "\n")
        (stage / "results.md").write_text(markdown(out))
    print(markdown(out))


def markdown(result: dict) -> str:
    tasks = list(result["rows"][0]["test_normalized"])
    lines = ["| Fisher from | " + " | ".join(tasks) + " | avg normalized % | statistics s |",
             "|" + "---|" * (len(tasks) + 3)]
    for row in result["rows"]:
        cells = [f"{100 * row['test_normalized'][t]:.1f}" for t in tasks]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {100 * row['average']['normalized']:.1f} | "
                     f"{row['seconds']['statistics']} |")
    return ("Fisher merging, normalised test accuracy per task (% of the task's expert).\n\n" + "\n".join(lines) +
            f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s\n")


if __name__ == "__main__":
    main()
