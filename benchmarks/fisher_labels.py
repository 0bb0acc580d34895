"""Fisher merging of the zoo's experts with each way of taking the Fisher, and where the floor goes.

The empirical Fisher (the validation split's own labels, one squared gradient per example, each model's Fisher
scaled to unit norm, then a floor of 1e-6 added), which the benchmark's fisher row took alone until it chose on
validation, ended 1.5 points below FusionBench's fisher_merging. This study asks why. The same Fisher merge, from:

- the data's labels per example (the empirical Fisher);
- labels drawn from each expert's own distribution (the true Fisher, sampled; programs/fisher_labels.py);
- the exact expectation over its classes (the true Fisher, as Matena & Raffel's code takes it);
- FusionBench's estimator (labels "weighted-sum"): per batch of 16 (a seeded order), the squared gradient of
  Σ_examples Σ_classes √p·log p with the model's own probabilities p (no labels; the square of a sum where the true
  Fisher is a sum of squares), summed over batches and divided by the number of examples;

each merged with floors 1e-5 to 1e-8 added after the unit-norm scaling (ours), and with 1e-6 added before it
(FusionBench's: (F + floor) / (‖F‖ + floor), programs/fisher_floor.py). Every merge scored on the validation
split (where a floor would be chosen) and on the test split.

    python benchmarks/fisher_labels.py                 # full zoo (about 25 minutes on 2 cores)
    python benchmarks/fisher_labels.py --variant tiny

Writes benchmarks/results/fisher-labels/result.json and results.md (command, commit and machine recorded).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from taskfuse import api
from taskfuse.bench.learned_over_merge import scored
from taskfuse.bench.learned_row import TENSOR_RULES
from taskfuse.bench.provenance import code_commit, command_line, machine, write_result
from taskfuse.bench.references import reference_scores
from taskfuse.bench.statistics_rows import example_items, validation_data
from taskfuse.eval.encoder import Encoded, load_encoder, sentence_embedding
from taskfuse.eval.harness import Evaluator, mean, normalized
from taskfuse.io.output import check_output_dir
from taskfuse.io.statistics_file import save_statistics
from taskfuse.programs.fisher_floor import NEGLIGIBLE_FLOOR, floor_before_scaling
from taskfuse.programs.fisher_labels import fisher_of_labels
from taskfuse.programs.statistics import normalized_fisher
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import variant_named

OUT = Path(__file__).resolve().parent / "results" / "fisher-labels"
SHARED_FLOOR = 1e-6  # the side by side's (both sides) and the benchmark's default
FLOORS = (1e-5, SHARED_FLOOR, 1e-7, 1e-8)
# (row, how, examples per item): per example in length order as the benchmark's row; batches in a seeded order
ESTIMATORS = (("the data's labels, per example (empirical Fisher)", "given", 1),
              ("labels drawn from the expert, per example (true Fisher, sampled)", "sampled", 1),
              ("expectation over the expert's classes, per example (true Fisher, exact)", "expected", 1),
              ("FusionBench's: squared gradient of Σ √p·log p over classes and a batch of 16", "weighted-sum", 16))


def raw_fisher(model, head, data: Encoded, how: str, size: int) -> dict[str, torch.Tensor]:
    """The expert's Fisher, unscaled: a mean over examples of squared gradients (of items of `size` examples)."""
    def logits(m, inputs):
        return head(sentence_embedding(m, inputs["ids"], inputs["mask"]))

    fisher, count = fisher_of_labels(model, example_items(data, size), logits, how)
    return {name: f * count / len(data.ids) for name, f in fisher.items()}  # summed over items, per example


def merged_scores(zoo, folders: list[Path], floor: float, out: Path, validation: Evaluator, test: Evaluator,
                  experts: dict) -> dict:
    models = [{"path": str(e.model_dir), "statistics": str(f)} for e, f in zip(zoo.experts.values(), folders)]
    api.merge({"method": "fisher", "base": str(zoo.base_dir), "seed": zoo.variant.recipe.seed, "dtype": "float32",
               "models": models, "params": {"floor": floor}, "tensor_rules": TENSOR_RULES}, out)
    model = load_encoder(out)
    return {"validation_normalized": mean(normalized(validation.score(model), experts["validation"]).values()),
            **scored(test.score(model), experts["test"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    check_output_dir(args.out, "report")  # before the run, not after it
    started, code = time.perf_counter(), code_commit()
    zoo = build_zoo(variant_named(args.variant))
    heads = {t: e.head() for t, e in zoo.experts.items()}
    validation, test = Evaluator(zoo.tasks, heads, "validation"), Evaluator(zoo.tasks, heads, "test")
    experts = {split: reference_scores(zoo, e)["expert"] for split, e in (("validation", validation), ("test", test))}
    data = validation_data(zoo)
    rows = []
    with tempfile.TemporaryDirectory(prefix="taskfuse-fisher-labels-") as work:
        for i, (name, how, size) in enumerate(ESTIMATORS):
            print(name, flush=True)
            gathering, after, before, norms = time.perf_counter(), [], [], {}
            for t, expert in zoo.experts.items():
                unit, norms[t] = normalized_fisher(raw_fisher(load_encoder(expert.model_dir), heads[t], data[t], how,
                                                              size))
                about = {"model": str(expert.model_dir), "task": t, "estimator": how, "examples_per_item": size}
                after.append(save_statistics(Path(work) / f"{i}-{t}", unit, "fisher", about))
                before.append(save_statistics(Path(work) / f"{i}-{t}-before", floor_before_scaling(
                    unit, norms[t], SHARED_FLOOR), "fisher", about))
                print(f"  {t}", flush=True)
            gathered = time.perf_counter() - gathering
            merges = [{"floor": floor, "placement": "after scaling",
                       **merged_scores(zoo, after, floor, Path(work) / f"m{i}-{floor:g}", validation, test, experts)}
                      for floor in FLOORS]
            merges.append({"floor": SHARED_FLOOR, "placement": "before scaling (FusionBench's)",
                           **merged_scores(zoo, before, NEGLIGIBLE_FLOOR, Path(work) / f"m{i}-before", validation, test,
                                           experts)})
            rows.append({"method": name, "estimator": how, "examples_per_item": size, "fisher_norms": norms,
                         "seconds": {"statistics": round(gathered, 1)}, "merges": merges})
            print("  " + ", ".join(f"{m['floor']:g} {m['placement']}: {100 * m['average']['normalized']:.2f}"
                                   for m in merges), flush=True)
    out = {"command": command_line(), "code": code, "machine": machine(), "variant": args.variant,
           "data": "each expert's validation split (statistics; scores for choosing a floor); test split (scores)",
           "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    write_result(args.out, out, markdown(out))
    print(markdown(out))


def markdown(result: dict) -> str:
    columns = [f"floor {m['floor']:g}" + (" before scaling" if m["placement"] != "after scaling" else "")
               for m in result["rows"][0]["merges"]]
    lines = ["| Fisher from | " + " | ".join(columns) + " | statistics s |", "|" + "---|" * (len(columns) + 2)]
    for row in result["rows"]:
        cells = [f"{100 * m['average']['normalized']:.1f} ({100 * m['validation_normalized']:.1f})"
                 for m in row["merges"]]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row['seconds']['statistics']} |")
    return ("Fisher merging of the zoo's experts: normalised test accuracy, % of the experts' (validation in "
            "brackets). Floors are added to each model's unit-norm Fisher (after scaling), or to its raw Fisher "
            "(before scaling, as FusionBench does).\n\n" + "\n".join(lines) +
            f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s\n")


if __name__ == "__main__":
    main()
