"""`taskfuse learn`: learn merge coefficients (AdaMerging, aTLAS) for the zoo's experts and write the merge."""
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


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def learn(method: str = typer.Argument(..., help="adamerging_task, adamerging_layer, atlas or atlas_fewshot"),
              out: Path = typer.Option(..., "-o", "--out", help="output folder: new, empty, or an earlier taskfuse "
                                       "merge (replaced); anything else is refused"),
              variant: str = typer.Option("quick", help=VARIANT_HELP),
              task_file: list[Path] = typer.Option([], "--task-file", help="your own .jsonl/.csv task (repeatable)"),
              steps: Optional[int] = typer.Option(None, min=1, help="optimiser steps (default: the method's)"),
              lr: Optional[float] = typer.Option(None, help="learning rate (default: the method's)")) -> None:
        """Learn how much of each expert's task vector to take (per task or per tensor) on the zoo's validation
        data, and write the merge with the spec that replays it, the learned record and a coefficient map."""
        from ..bench.learned import learn_on_zoo, learned_method
        from ..bench.learned_row import record, write_learned
        from ..bench.plots import coefficient_heatmap
        from ..io.output import check_output_dir
        from ..zoo.build import build_zoo
        from ..zoo.recipe import variant_named
        try:
            if lr is not None and not lr > 0:
                raise UsageError(f"--lr {lr}: give a positive learning rate.")
            chosen = learned_method(method, steps, lr)
            check_output_dir(out, "merge")  # before the zoo and the learning, not after
            with _progress_bars() as bars:
                zoo = build_zoo(variant_named(variant), 1, _zoo_reporter(bars), tuple(map(str, task_file)))
                bar = bars.add_task(method, total=chosen.recipe.steps, stage="learn")
                result = learn_on_zoo(zoo, chosen, lambda done, total, loss: bars.update(
                    bar, completed=done, description=f"{method} loss {loss:.4f}"))
            learned = record(zoo, chosen, result)
            files = {"taskfuse_learned.json": json.dumps(learned, indent=1).encode()}
            if "*" not in learned["coefficients"]:
                with tempfile.TemporaryDirectory() as tmp:
                    coefficient_heatmap(learned["coefficients"], learned["tasks"], f"{method}: learned coefficients",
                                        Path(tmp) / "coefficients.png")
                    files["coefficients.png"] = (Path(tmp) / "coefficients.png").read_bytes()
            write_learned(zoo, chosen, result, out, files)
        except TaskfuseError as e:
            fail(e)
        memory = learned["memory"]
        console.print(f"wrote {out}: {method} on the {variant} zoo, {chosen.recipe.steps} steps in "
                      f"{learned['seconds']['learn']} s (loss {learned['losses'][0]:.4f} → {learned['losses'][-1]:.4f});"
                      f" held base {memory['base_mib']} MiB + task vectors {memory['task_vectors_mib']} MiB, RSS grew "
                      f"{memory['rss_added_mib']} MiB. Replay: taskfuse merge {out / 'taskfuse_spec.yaml'} -o OUT; "
                      f"score: taskfuse eval {out} --variant {variant}", soft_wrap=True)
