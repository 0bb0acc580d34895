"""`taskfuse route`: a routed model over a library of LoRA adapters (Arrow: no training, no data), saved in the
routed-model format that `taskfuse.routing.store.load_routed` reads back as a torch module."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import TaskfuseError, UsageError

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def route(router: str = typer.Argument(..., help="arrow (training-free per-token routing)"),
              base: str = typer.Option(..., help="the base model the adapters were trained on"),
              adapter: list[str] = typer.Option(..., "--adapter", help="a PEFT LoRA adapter directory; repeat "
                                                "for each adapter of the library (NAME=PATH names it)"),
              out: Path = typer.Option(..., "-o", "--out", help="folder for the routed model (new, empty, or an "
                                       "earlier routed model)"),
              top_k: int = typer.Option(3, min=1, help="adapters mixed per token"),
              temperature: float = typer.Option(1.0, help="softmax temperature over the top-k scores")) -> None:
        """Route each token of BASE to the adapters whose update it aligns with most (Arrow); write the routed
        model. Load it with taskfuse.routing.store.load_routed(OUT)."""
        from ..io.output import check_output_dir
        from ..routing.arrow import ArrowRouter
        from ..routing.library import LoraLibrary
        from ..routing.modules import route as attach
        from ..routing.store import _load_base, save_routed
        try:
            if router != "arrow":
                raise UsageError(f"router {router!r}: `taskfuse route` builds arrow (training-free); PHATGOOSE "
                                 "gates, Twin-Merging and LoraHub need data and run in `taskfuse bench --routing`.")
            if temperature <= 0:
                raise UsageError(f"--temperature {temperature}: give a positive temperature, e.g. 1.0.")
            check_output_dir(out, "routed")
            named = dict(_named(a) for a in adapter)
            if len(named) != len(adapter):
                raise UsageError("two adapters share a name: give each a distinct NAME=PATH.")
            library = LoraLibrary.from_adapters(base, named)
            model = attach(_load_base(base), library, lambda name, updates, module: ArrowRouter.for_updates(
                updates, module.in_features, top_k, temperature))
            save_routed(model, library, "arrow", {"top_k": top_k, "temperature": temperature}, out)
        except TaskfuseError as e:
            fail(e)
        console.print(f"wrote {out}: Arrow over {len(library.experts)} adapters ({', '.join(library.experts)}), "
                      f"{len(library.modules)} routed modules, +{library.parameters_count()} parameters; load it "
                      "with taskfuse.routing.store.load_routed", soft_wrap=True)


def _named(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    return (name, path) if sep else (Path(spec).name, spec)
