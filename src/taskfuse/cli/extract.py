"""`taskfuse extract-lora`: a PEFT LoRA adapter from a full fine-tune, by truncated SVD of each weight update."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError
from .progress import progress_display

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command("extract-lora")
    def extract_lora(model: str = typer.Argument(..., help="the full fine-tune: a directory or hub id"),
                     base: str = typer.Option(..., help="the model it was fine-tuned from"),
                     out: Path = typer.Option(..., "-o", "--out", help="folder for the adapter (new, empty, or an "
                                              "earlier extracted adapter)"),
                     rank: Optional[int] = typer.Option(None, help="the same LoRA rank for every layer"),
                     energy: Optional[float] = typer.Option(
                         None, help="per layer, the smallest rank keeping this fraction of the update's squared "
                                    "singular values")) -> None:
        """Write a PEFT adapter that PeftModel.from_pretrained loads on BASE, approximating MODEL: B·A is each
        layer's best rank-r approximation of (MODEL − BASE); changed biases and norms are stored whole. The
        per-layer error is in OUT/taskfuse_extraction.json."""
        from ..programs.extract_lora import REPORT, RankRule, extract_lora as run
        from .adapter_loading import how_to_load
        try:
            rule = RankRule(rank, energy)
            with progress_display(console, "extracting") as bar:
                task = bar.add_task("", total=None)
                result = run(model, base, out, rule, progress=lambda done, total, name: bar.update(
                    task, completed=done, total=total, description=name))
        except TaskfuseError as e:
            fail(e)
        summary = result.summary()
        console.print(f"wrote {out}: {summary['modules']} LoRA modules (rank {summary['rank']['min']}-"
                      f"{summary['rank']['max']}), {summary['tensors_saved_whole']} tensors stored whole; relative "
                      f"error of the updates mean {summary['relative_error']['mean']:.4f}, max "
                      f"{summary['relative_error']['max']:.4f} (per layer: {out / REPORT}); {summary['seconds']} s; "
                      f"load it with {how_to_load(out)}", soft_wrap=True)
