"""`taskfuse learn`: learn merge coefficients (AdaMerging, aTLAS, Self Positioning) for the zoo's experts, or for a
spec's causal LMs, sequence classifiers or embedding models on the user's text, and write the merge with the spec
that replays it."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError, UsageError
from .bench import VARIANT_HELP, _progress_bars, _zoo_reporter

console = Console(stderr=True)


def key_values(pairs: list[str], option: str) -> dict:
    """{"density": 0.3} from ["density=0.3"]: each value read as YAML (numbers, booleans, strings)."""
    import yaml
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {pair!r}: give KEY=VALUE, e.g. density=0.3.")
        values[key] = yaml.safe_load(value)
    return values


def _summary(out: Path, method: str, source, steps: int, learned: dict, score_hint: str) -> None:
    memory = learned.get("memory")
    held = (f" held base {memory['base_mib']} MiB + task vectors {memory['task_vectors_mib']} MiB, RSS grew "
            f"{memory['rss_added_mib']} MiB." if memory else "")
    tail = learned.get("tail_average")
    held += f" Coefficients: the mean over the last {tail['steps_averaged']} steps." if tail else ""
    console.print(f"wrote {out}: {method} on {source}, {steps} steps in {learned['seconds']['learn']} s (loss "
                  f"{learned['losses'][0]:.4f} → {learned['losses'][-1]:.4f});{held} Replay: taskfuse merge "
                  f"{out / 'taskfuse_spec.yaml'} -o OUT; score: {score_hint}", soft_wrap=True)


def _learn_spec(chosen, spec_path: Path, data: list[str], out: Path, start: Path | None, step: str,
                sparsifier: tuple[str, dict] | None = None, max_tokens: int | None = None) -> None:
    """`taskfuse learn --spec`, with a progress bar and a summary."""
    from ..bench.learn_spec import learn_spec
    with _progress_bars() as bars:
        bar = bars.add_task(chosen.name, total=chosen.recipe.steps, stage="learn")
        learned = learn_spec(chosen, spec_path, data, out, start, step, sparsifier, lambda done, total, loss:
                             bars.update(bar, completed=done, description=f"{chosen.name} loss {loss:.4f}"),
                             max_tokens)
    hint = (f"load {out} with transformers (an embedding model's with SentenceTransformer)" if "heads" not in learned
            else "model i's classifier (its place in the spec) is "
            f"taskfuse.programs.classifier_heads.task_classifier({str(out)!r}, i)")
    _summary(out, chosen.name, spec_path, chosen.recipe.steps, learned, hint)


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def learn(method: str = typer.Argument(..., help="adamerging_task, adamerging_layer, adamerging_layer_ties "
                                           "(AdaMerging++), atlas, atlas_fewshot or self_positioning"),
              out: Path = typer.Option(..., "-o", "--out", help="output folder: new, empty, or an earlier taskfuse "
                                       "merge (replaced); anything else is refused"),
              variant: str = typer.Option("quick", help=VARIANT_HELP),
              task_file: list[Path] = typer.Option([], "--task-file", help="your own .jsonl/.csv task (repeatable)"),
              steps: Optional[int] = typer.Option(None, min=1, help="optimiser steps (default: the method's)"),
              lr: Optional[float] = typer.Option(None, help="learning rate (default: the method's)"),
              spec: Optional[Path] = typer.Option(None, help="your own models instead of the zoo: a spec with a base "
                                                  "and its causal-LM, sequence-classifier or embedding-model "
                                                  "(sentence-transformers) fine-tunes"),
              data: list[Path] = typer.Option([], "--data", help="with --spec: one JSONL per model, in the spec's "
                                              "order, of {\"text\"} or {\"prompt\", \"completion\"} lines "
                                              "(classifiers: {\"text\"}, with \"label\" for atlas; embedding "
                                              "models: {\"text\", \"positive\"} pairs or {\"text\", \"label\"})"),
              start: Optional[Path] = typer.Option(None, "--start", help="with --spec: a merge of the spec's models "
                                                   "(e.g. taskfuse merge's output) to learn from; its coefficient "
                                                   "starts at 1, the models' at 0. The replay spec names it: keep "
                                                   "it"),
              partitions: Optional[int] = typer.Option(None, "--partitions", min=2, max=255,
                                                       help="aTLAS×K: split each tensor's entries into K seeded "
                                                       "random partitions, one coefficient per model and partition "
                                                       "(atlas, atlas_fewshot, adamerging_layer); replayed by the "
                                                       "partitioned_task_arithmetic method"),
              partition_seed: int = typer.Option(0, "--partition-seed", help="with --partitions: the seed that "
                                                 "draws each tensor's partitions"),
              sparsify: Optional[str] = typer.Option(None, "--sparsify", help="learn over the task vectors as this "
                                                     "registered delta method pre-processes them (dare_linear, "
                                                     "breadcrumbs, ties, ...: AdaMerging++ with any sparsifier); "
                                                     "the replay spec is that method with the learned weights"),
              sparsify_param: list[str] = typer.Option([], "--sparsify-param", help="KEY=VALUE parameter of the "
                                                       "--sparsify method (repeatable), e.g. density=0.3"),
              max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="with --spec's sequence "
                                                       "classifiers or embedding models: tokens per text, as many as "
                                                       "they were trained to read (classifiers: default 256, or the "
                                                       "model's positions if fewer; embedding models: the base's "
                                                       "max_seq_length)"),
              step: str = typer.Option("recomputed", "--step", help="the gradient step: recomputed (each layer "
                                       "recomputed in backward: least memory) or merged-once (θ merged once per "
                                       "step: faster, holds θ's gradient and every layer's activations); both learn "
                                       "the same coefficients up to summation order"),
              average_tail: Optional[float] = typer.Option(None, "--average-tail", help="write the mean of the "
                                                           "coefficients over this fraction of the last steps (0.5: "
                                                           "the second half; Polyak/SWA averaging) instead of the "
                                                           "last step's")) -> None:
        """Learn how much of each model's task vector to take (per task or per tensor) and write the merge with
        the spec that replays it, the learned record and a coefficient map. Without --spec: the benchmark zoo's
        experts on their validation data; with --spec and --data: your causal LMs, sequence classifiers or
        embedding models on your text."""
        from ..bench.learned import learn_on_zoo, learned_method
        from ..bench.learned_row import record, write_learned
        from ..bench.partition_row import is_partitioned, partitioned_record, with_partitions, write_partitioned
        from ..bench.sparsified_row import (check_sparsifiable, learn_sparsified_on_zoo, sparsify_record,
                                            write_sparsified)
        from ..bench.spec_learning_run import learned_files
        from ..io.output import check_output_dir
        from ..programs.learning_loop import STEPS
        from ..programs.tail_average import check_fraction, tail_averaged
        from ..zoo.build import build_zoo
        from ..zoo.recipe import variant_named
        try:
            if lr is not None and not lr > 0:
                raise UsageError(f"--lr {lr}: give a positive learning rate.")
            chosen = with_partitions(learned_method(method, steps, lr), partitions, partition_seed)
            sparsifier = None
            if sparsify is not None:
                sparsifier = (sparsify, key_values(sparsify_param, "--sparsify-param"))
                check_sparsifiable(chosen, *sparsifier)
            elif sparsify_param:
                raise UsageError("--sparsify-param goes with --sparsify METHOD.")
            if average_tail is not None:
                check_fraction(average_tail)
                if spec is not None:
                    raise UsageError("--average-tail is not yet offered with --spec: the spec learning writes "
                                     "its record (taskfuse_learned.json) itself, and it could not say that the "
                                     "coefficients were averaged. Fix: drop --average-tail, or learn on the zoo.")
            if step not in STEPS:
                raise UsageError(f"--step {step}: use one of {', '.join(STEPS)}.")
            if start is not None and not start.exists():
                raise UsageError(f"--start {start} does not exist. Fix: give the folder a merge of the spec's "
                                 "models was written to (taskfuse merge SPEC -o FOLDER).")
            if start is not None and out.resolve() in (start.resolve(), *start.resolve().parents):
                raise UsageError(f"-o {out} would replace the start merge {start} (or the folder holding it), which "
                                 "the learned merge's replay spec reads. Fix: write the learned merge to another "
                                 "folder.")
            check_output_dir(out, "merge")  # before the zoo and the learning, not after
            if spec is not None and (task_file or variant != "quick"):  # the zoo's options, which --spec replaces
                raise UsageError(f"{'--task-file' if task_file else '--variant'} chooses the benchmark zoo's "
                                 "experts and tasks, which --spec replaces with your models. Fix: give your data "
                                 "with --data (one JSONL per model), or drop --spec to learn on the zoo.")
            if spec is not None:
                return _learn_spec(chosen, spec, [str(d) for d in data], out, start, step, sparsifier, max_tokens)
            if max_tokens is not None:
                raise UsageError("--max-tokens goes with --spec (your classifiers); the zoo's experts read their "
                                 "tasks as the benchmark encodes them.")
            if start is not None:
                raise UsageError("--start goes with --spec (your models and a merge of them); for the zoo's experts, "
                                 "python benchmarks/learned_over_merge.py learns from a data-free merge.")
            if data:
                raise UsageError("--data goes with --spec (your models); the zoo's experts learn on their own data.")
            with _progress_bars() as bars:
                zoo = build_zoo(variant_named(variant), 1, _zoo_reporter(bars), tuple(map(str, task_file)))
                bar = bars.add_task(method, total=chosen.recipe.steps, stage="learn")
                report = lambda done, total, loss: bars.update(  # noqa: E731
                    bar, completed=done, description=f"{method} loss {loss:.4f}")
                with (tail_averaged(chosen.recipe.steps, average_tail) if average_tail is not None
                      else nullcontext()) as average:
                    report = report if average is None else average.progress(report)
                    result = (learn_on_zoo(zoo, chosen, report, step) if sparsifier is None
                              else learn_sparsified_on_zoo(zoo, chosen, sparsifier, report, step))
            averaged = {} if average is None else {"tail_average": average.describe()}
            if sparsifier is not None:
                learned = {**record(zoo, chosen, result), "sparsify": sparsify_record(sparsifier), **averaged}
                write_sparsified(zoo, result, sparsifier, out, learned_files(learned, method))
            elif is_partitioned(result.view):
                learned = {**partitioned_record(zoo, chosen, result), **averaged}
                write_partitioned(zoo, result, out, learned_files(learned, method))
            else:
                learned = {**record(zoo, chosen, result), **averaged}
                write_learned(zoo, chosen, result, out, learned_files(learned, method))
        except TaskfuseError as e:
            fail(e)
        _summary(out, method, f"the {variant} zoo", chosen.recipe.steps, learned,
                 f"taskfuse eval {out} --variant {variant}")
