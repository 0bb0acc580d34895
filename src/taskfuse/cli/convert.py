"""`taskfuse convert`: one checkpoint rewritten in another format (GGUF ↔ Hugging Face safetensors)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError, UsageError
from .progress import progress_display

console = Console(stderr=True)
FORMATS = ("hf", "gguf")


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def convert(model: str = typer.Argument(..., help="a model folder, .safetensors or .gguf file, PEFT adapter "
                                            "(BASE+ADAPTER), or hub id"),
                out: Path = typer.Option(..., "-o", "--out", help="output folder (new, empty, or an earlier one of "
                                         "the same kind)"),
                fmt: str = typer.Option("hf", "--format", help="hf (safetensors folder) or gguf"),
                outtype: str = typer.Option("f16", help="with --format gguf: f32, f16, bf16 or q8_0"),
                dtype: Optional[str] = typer.Option(None, help="with --format hf: float32, bfloat16 or float16 "
                                                    "(default: as stored; a quantized GGUF reads as float32)")) -> None:
        """Rewrite MODEL in another format: a GGUF (quantized or not) as a Hugging Face folder that transformers
        and every taskfuse command load, or a Hugging Face model (llama, mistral, qwen2, qwen3, gemma3) as GGUF."""
        from .. import api
        from ..programs.gguf_output import convert_to_gguf
        try:
            if fmt not in FORMATS:
                raise UsageError(f"--format {fmt!r}: choose hf or gguf.")
            with progress_display(console, "converting") as bar:
                task = bar.add_task("", total=None)

                def progress(done: int, total: int, name: str) -> None:
                    bar.update(task, completed=done, total=total, description=name)

                if fmt == "gguf":
                    summary = convert_to_gguf(model, out, outtype, progress)
                    what = f"{summary['tensors']} tensors as {summary['types']}"
                else:
                    spec = {"method": "passthrough", "models": [{"path": model}], **({"dtype": dtype} if dtype else {})}
                    result = api.merge(spec, out, progress=progress)
                    what = f"{len(result.plan.jobs)} tensors in {len(result.plan.shards)} shard(s)"
        except TaskfuseError as e:
            fail(e)
        console.print(f"wrote {out}: {what}", soft_wrap=True)
