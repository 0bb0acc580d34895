"""`taskfuse moe`: upcycle a dense base and its expert fine-tunes into one mixture of experts of the base's family
(Mixtral, Qwen2-MoE, Qwen3-MoE)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import TaskfuseError
from .progress import progress_display

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def moe(spec: Path = typer.Argument(..., help="MoE spec (YAML): base, experts with positive_prompts (and "
                                        "negative_prompts, examples for tune_router), experts_per_token, router_init "
                                        "hidden|trained|random, tune_router (steps, lr, batch_size, routing_loss), "
                                        "dtype, shared_expert none|base (Qwen2); or a mergekit-moe config "
                                        "(base_model, experts[].source_model, gate_mode hidden|random)"),
            out: Path = typer.Option(..., "-o", "--out",
                                     help="output folder (new, empty, or an earlier merge)")) -> None:
        """Write a Mixtral (Llama/Mistral base), Qwen2-MoE or Qwen3-MoE checkpoint: attention, norms and embeddings
        from the base, each expert's MLP as one expert, routers initialised from hidden states of each expert's
        prompts. AutoModelForCausalLM loads it."""
        from ..programs.moe import upcycle
        from ..programs.moe_source import read_moe_spec
        try:
            with progress_display(console) as progress:
                bar = progress.add_task("", total=None, stage="upcycling")

                def tuning(step: int, steps: int, loss: float) -> None:
                    progress.update(bar, completed=step, total=steps, description=f"loss {loss:.3f}")
                progress.update(bar, description="writing the experts; tuning the routers after, if asked")
                summary = upcycle(read_moe_spec(spec), out, tuning)
        except TaskfuseError as e:
            fail(e)
        console.print(f"wrote {out} ({summary['format']}): {summary['experts']} experts x {summary['layers']} "
                      f"layers, top-"
                      f"{summary['experts_per_token']} routing, routers from {summary['router_init']}"
                      + (f", tuned {summary['tune_router']['steps']} steps (loss {summary['tune_router']['losses'][0]}"
                         f" -> {summary['tune_router']['losses'][-1]})" if "tune_router" in summary else ""),
                      soft_wrap=True)
