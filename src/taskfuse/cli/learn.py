"""`taskfuse learn`: learn merge coefficients (AdaMerging, aTLAS, Self Positioning) for the zoo's experts, or for a
spec's causal LMs or sequence classifiers on the user's text, and write the merge with the spec that replays it."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError, UsageError
from .bench import VARIANT_HELP, _progress_bars, _zoo_reporter

console = Console(stderr=True)


def learned_files(learned: dict, method: str) -> dict[str, bytes]:
    """taskfuse_learned.json, and for per-tensor coefficients their layer × task map, to write beside the merge."""
    from ..bench.plots import coefficient_heatmap
    files = {"taskfuse_learned.json": json.dumps(learned, indent=1).encode()}
    if "*" not in learned["coefficients"]:
        what = ("mean over each tensor's partitions" if "partition_coefficients" in learned
                else "learned coefficients")
        with tempfile.TemporaryDirectory() as tmp:
            coefficient_heatmap(learned["coefficients"], learned["tasks"], f"{method}: {what}",
                                Path(tmp) / "coefficients.png")
            files["coefficients.png"] = (Path(tmp) / "coefficients.png").read_bytes()
    return files


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
    console.print(f"wrote {out}: {method} on {source}, {steps} steps in {learned['seconds']['learn']} s (loss "
                  f"{learned['losses'][0]:.4f} → {learned['losses'][-1]:.4f});{held} Replay: taskfuse merge "
                  f"{out / 'taskfuse_spec.yaml'} -o OUT; score: {score_hint}", soft_wrap=True)


def _learn_spec(chosen, spec_path: Path, data: list[str], out: Path, start: Path | None, step: str,
                sparsifier: tuple[str, dict] | None = None) -> None:
    """`taskfuse learn --spec`: a user's causal LMs or sequence classifiers, each learning from its own JSONL (from
    a merge of them, with `start`)."""
    from .. import api
    from ..programs.learned_spec import learned_spec
    from ..programs.spec_learning import SpecLearning, learn_for_spec
    from ..programs.classifier_learning import CLASSIFIER_TENSOR_RULES, is_classifier_spec, learn_for_classifiers
    from ..bench.learned import describe, held_memory
    from ..bench.memory import RssPeak
    from ..bench.partition_row import learned_coefficients
    from ..bench.sparsified_row import sparsify_record
    from ..programs.partition_spec import partition_spec
    from ..programs.sparsified_vectors import sparsified_spec
    if chosen.interpolation == "slerp":
        raise UsageError(f"{chosen.name} is Self Positioning for embedding models: a contrastive loss on labelled "
                         "examples of a classification task's classes. With --spec use atlas (cross-entropy on "
                         "your texts or labels) or an adamerging method.")
    merge_spec = api.as_spec(spec_path)
    classifiers = is_classifier_spec(merge_spec)
    if chosen.per_class is not None and not classifiers:
        raise UsageError(f"{chosen.name} takes k examples per class of a classification task; with --spec's causal "
                         "LMs use atlas (cross-entropy on your texts) or an adamerging method.")
    start_path = None if start is None else str(start.resolve())  # the replay spec must find it from anywhere
    how = SpecLearning(chosen.parameterization, chosen.recipe, chosen.init, chosen.ties_density,
                       **({"batch_size": chosen.batch_size} if classifiers else {}),
                       seed=merge_spec.seed, start=start_path, step=step, sparsify=sparsifier)
    with _progress_bars() as bars, RssPeak() as memory:
        bar = bars.add_task(chosen.name, total=chosen.recipe.steps, stage="learn")
        report = lambda done, total, loss: bars.update(  # noqa: E731
            bar, completed=done, description=f"{chosen.name} loss {loss:.4f}")
        result = (learn_for_classifiers(merge_spec, data, how, chosen.per_class, report) if classifiers
                  else learn_for_spec(merge_spec, data, how, report))
    models = [*([start_path] if start_path else []), *(m.path for m in merge_spec.models)]
    rules = CLASSIFIER_TENSOR_RULES if classifiers else None
    if chosen.parameterization.kind == "partition":
        replay = partition_spec(result.view, merge_spec.base, models, seed=merge_spec.seed, dtype=merge_spec.dtype,
                                tensor_rules=rules)
    else:
        replay = learned_spec(result.view, merge_spec.base, models, seed=merge_spec.seed,
                              dtype=merge_spec.dtype, tensor_rules=rules, ties_density=chosen.ties_density)
        if sparsifier is not None:
            replay = sparsified_spec(replay, *sparsifier)
    learned = {"method": chosen.name, "learning": describe(chosen), "data_seen": result.data_seen,
               **({"start": start_path} if start_path else {}),
               **learned_coefficients(result.view), "tasks": models,
               **({"sparsify": sparsify_record(sparsifier)} if sparsifier else {}),
               "losses": [round(x, 5) for x in result.losses], "seconds": {"learn": round(result.seconds, 1)},
               "gradient_step": how.step, "memory": held_memory(result.view, memory.added)}
    if not classifiers:
        api.merge(replay, out, extra_files=learned_files(learned, chosen.name))
        return _summary(out, chosen.name, spec_path, chosen.recipe.steps, learned, f"load {out} with transformers")
    _write_classifier_merge(replay, {**learned, "heads": {m.path: f"heads/{i}" for i, m in
                                                          enumerate(merge_spec.models)}}, result, out, chosen.name)
    _summary(out, chosen.name, spec_path, chosen.recipe.steps, learned, "model i's classifier (its place in the "
             f"spec) is taskfuse.programs.classifier_heads.task_classifier({str(out)!r}, i)")


def _write_classifier_merge(replay: dict, learned: dict, result, out: Path, method: str) -> None:
    """The merged body as the replay spec writes it, and every model's head beside it (`heads/<i>/`): one folder
    that appears whole or not at all."""
    from .. import api
    from ..io.output import staged_output
    from ..programs.classifier_heads import write_heads
    with staged_output(out, "merge") as stage:
        api.merge(replay, stage, extra_files=learned_files(learned, method))
        write_heads(stage, result.own, result.configs)


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
                                                  "and its causal-LM or sequence-classifier fine-tunes"),
              data: list[Path] = typer.Option([], "--data", help="with --spec: one JSONL per model, in the spec's "
                                              "order, of {\"text\"} or {\"prompt\", \"completion\"} lines "
                                              "(classifiers: {\"text\"}, with \"label\" for atlas)"),
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
              step: str = typer.Option("recomputed", "--step", help="the gradient step: recomputed (each layer "
                                       "recomputed in backward: least memory) or merged-once (θ merged once per "
                                       "step: faster, holds θ's gradient and every layer's activations); both learn "
                                       "the same coefficients up to summation order")) -> None:
        """Learn how much of each model's task vector to take (per task or per tensor) and write the merge with
        the spec that replays it, the learned record and a coefficient map. Without --spec: the benchmark zoo's
        experts on their validation data; with --spec and --data: your causal LMs or sequence classifiers on your
        text."""
        from ..bench.learned import learn_on_zoo, learned_method
        from ..bench.learned_row import record, write_learned
        from ..bench.partition_row import is_partitioned, partitioned_record, with_partitions, write_partitioned
        from ..bench.sparsified_row import (check_sparsifiable, learn_sparsified_on_zoo, sparsify_record,
                                            write_sparsified)
        from ..io.output import check_output_dir
        from ..programs.learning_loop import STEPS
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
            if spec is not None:
                return _learn_spec(chosen, spec, [str(d) for d in data], out, start, step, sparsifier)
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
                result = (learn_on_zoo(zoo, chosen, report, step) if sparsifier is None
                          else learn_sparsified_on_zoo(zoo, chosen, sparsifier, report, step))
            if sparsifier is not None:
                learned = {**record(zoo, chosen, result), "sparsify": sparsify_record(sparsifier)}
                write_sparsified(zoo, result, sparsifier, out, learned_files(learned, method))
            elif is_partitioned(result.view):
                learned = partitioned_record(zoo, chosen, result)
                write_partitioned(zoo, result, out, learned_files(learned, method))
            else:
                learned = record(zoo, chosen, result)
                write_learned(zoo, chosen, result, out, learned_files(learned, method))
        except TaskfuseError as e:
            fail(e)
        _summary(out, method, f"the {variant} zoo", chosen.recipe.steps, learned,
                 f"taskfuse eval {out} --variant {variant}")
