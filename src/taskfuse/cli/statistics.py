"""`taskfuse statistics`: a model's statistics on its task's text, for the data-aware merges regmean and fisher."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import TaskfuseError
from .progress import progress_display

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command("statistics")
    def statistics(model: str = typer.Argument(..., help="a fine-tuned model: directory, GGUF file or BASE+ADAPTER"),
                   kind: str = typer.Option(..., help="gram (for regmean: every linear layer's input Gram) or "
                                            "fisher (for fisher: the Fisher diagonal; causal LMs and "
                                            "sequence classifiers)"),
                   data: Path = typer.Option(..., help="JSONL of its task: {\"text\"} or {\"prompt\", "
                                             "\"completion\"} per line (fisher scores the completion); for a "
                                             "classifier {\"text\", \"label\"}"),
                   out: Path = typer.Option(..., "-o", "--out", help="folder for the statistics (new, empty, or "
                                            "earlier statistics)"),
                   batch_size: int = typer.Option(8, min=1, help="lines per forward pass (gram; fisher with "
                                                  "weighted-sum: lines per squared gradient)"),
                   normalize: bool = typer.Option(True, help="fisher: scale to unit norm over the whole model, so "
                                                  "models that fit their data better do not count for less"),
                   fisher_labels: str = typer.Option("given", help="fisher: the tokens whose log-likelihood it "
                                                     "squares the gradient of: given (the text's own: the empirical "
                                                     "Fisher), sampled (drawn from the model: the true Fisher), "
                                                     "expected (classifiers: every class, one pass each) or "
                                                     "weighted-sum (every token weighted by √p, one gradient per "
                                                     "batch: FusionBench's estimator)"),
                   seed: int = typer.Option(0, help="fisher with sampled labels: the draws' seed"),
                   floor_before_scaling: float | None = typer.Option(
                       None, help="fisher: add this floor to the raw Fisher before scaling it, as FusionBench "
                       "does ((F + floor) / (‖F‖ + floor)); then merge with `floor: 1e-30` in the spec's params")
                   ) -> None:
        """Gather what a data-aware merge weighs a model by, then name the folder as the model's `statistics:` in
        a spec with `method: regmean` or `method: fisher`."""
        from ..programs.fisher_floor import NEGLIGIBLE_FLOOR
        from ..programs.model_statistics import gather_statistics
        try:
            with progress_display(console, "statistics") as bar:
                task = bar.add_task(kind, total=None)
                folder = gather_statistics(model, kind, data, out, batch_size, normalize,
                                           lambda done, total: bar.update(task, completed=done, total=total),
                                           fisher_labels, seed, floor_before_scaling)
        except TaskfuseError as e:
            fail(e)
        folded = (f" (with `params: {{floor: {NEGLIGIBLE_FLOOR:g}}}`: the floor is in the statistics)"
                  if floor_before_scaling is not None else "")
        console.print(f"wrote {folder}: {kind} statistics of {model} on {data}. Use it as `statistics: {folder}` "
                      f"for this model in a spec with method {'regmean' if kind == 'gram' else 'fisher'}{folded}.",
                      soft_wrap=True)
