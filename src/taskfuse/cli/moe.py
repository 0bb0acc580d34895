"""`taskfuse moe`: upcycle a dense base and its expert fine-tunes into one mixture of experts of the base's family
(Mixtral, Qwen2-MoE, Qwen3-MoE)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import TaskfuseError

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def moe(spec: Path = typer.Argument(..., help="MoE spec (YAML): base, experts with positive_prompts (and "
                                        "negative_prompts), experts_per_token, router_init hidden|trained|random, "
                                        "dtype, shared_expert none|base (Qwen2)"),
            out: Path = typer.Option(..., "-o", "--out", help="output folder (new, empty, or an earlier merge)")) -> None:
        """Write a Mixtral (Llama/Mistral base), Qwen2-MoE or Qwen3-MoE checkpoint: attention, norms and embeddings
        from the base, each expert's MLP as one expert, routers initialised from hidden states of each expert's
        prompts. AutoModelForCausalLM loads it."""
        from ..programs.moe import load_moe_spec, upcycle
        try:
            with console.status("upcycling"):
                summary = upcycle(load_moe_spec(spec), out)
        except TaskfuseError as e:
            fail(e)
        console.print(f"wrote {out} ({summary['format']}): {summary['experts']} experts x {summary['layers']} layers, top-"
                      f"{summary['experts_per_token']} routing, routers from {summary['router_init']}", soft_wrap=True)
