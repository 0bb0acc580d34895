"""`taskfuse plan | methods | demo`, `merge` (cli/merge.py), the benchmark's `zoo | eval | bench` (cli/bench.py)
and `learn` (cli/learn.py), `search` (cli/search.py), `extract-lora` (cli/extract.py), `route`
(cli/route.py), `convert` (cli/convert.py), `moe` (cli/moe.py),
`generate` (cli/generate.py), `fetch-model` (cli/fetch_model.py)."""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import api
from ..errors import TaskfuseError
from ..methods import all_methods, get_method
from ..terminate import exit_cleanly_on_sigterm
from .bench import register as register_bench_commands
from .convert import register as register_convert_command
from .generate import register as register_generate_command
from .moe import register as register_moe_command
from .method_params import params_table
from .plan_table import plan_table
from .extract import register as register_extract_command
from .fetch_model import register as register_fetch_model_command
from .learn import register as register_learn_command
from . import merge as merge_command
from .route import register as register_route_command
from .search import register as register_search_command
from .statistics import register as register_statistics_command
from .crash import EXIT_STATUS as CRASH_STATUS
from .crash import report_crash

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Merge task-specific fine-tunes into one model.")
console = Console(stderr=True)


def _print_error(e: TaskfuseError) -> None:
    console.print(Text.assemble(("error", "bold red"), f" ({type(e).__name__}): {e}"), soft_wrap=True)


def _fail(e: TaskfuseError) -> None:
    _print_error(e)
    raise typer.Exit(2)


merge_command.register(app, _fail)  # first in `taskfuse --help`, as the command most runs start with


@app.command()
def plan(
    spec: Path = typer.Argument(..., help="taskfuse or mergekit YAML spec"),
    as_json: bool = typer.Option(False, "--json", help="print the full plan as JSON"),
    max_shard_size: str = typer.Option("2GB"),
) -> None:
    """Show every output tensor's method, parameters, sources and weights without reading tensor data (tensors
    that differ only in their layer number and share the rest on one row; --json: one entry per tensor)."""
    try:
        p = api.plan(spec, max_shard_size)
    except TaskfuseError as e:
        _fail(e)
    if as_json:
        sys.stdout.write(p.to_json() + "\n")
        return
    Console().print(plan_table(p))
    Console().print(json.dumps(p.summary()))


@app.command()
def methods(
    name: Optional[str] = typer.Argument(None, help="show one method in detail"),
    markdown: bool = typer.Option(False, "--markdown", help="print the README's method table"),
) -> None:
    """List the registered merge methods (generated from the registry)."""
    out = Console()
    if markdown:
        sys.stdout.write(methods_markdown())
        return
    if name is None:
        table = Table("method", "space", "summary", "paper")
        for m in all_methods():
            table.add_row(m.name, m.space, what_it_does(m), m.paper)
        out.print(table)
        return
    try:
        m = get_method(name)
    except TaskfuseError as e:
        _fail(e)
    out.print(f"[bold]{m.name}[/] ({m.space} space): {what_it_does(m)}\npaper: {m.paper}\nreference: {m.reference}\n"
              f"traits: {', '.join(sorted(m.traits)) or '-'}\nmodels: {m.min_models}..{m.max_models or 'any'}")
    out.print(params_table(m.params) if m.params.__dataclass_fields__ else "parameters: none")


def what_it_does(m) -> str:
    """The first paragraph of the method's docstring on one line: the registry's summary is its first line, which
    cuts a sentence that runs on (knots). (The registry is where this belongs; methods/registry.py is pinned by
    bench-full, so it waits for that result's next run.)"""
    return first_paragraph(m.fn.__doc__) or ""


def first_paragraph(doc: str | None) -> str | None:
    """A docstring's first paragraph on one line."""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split()) if doc else None


def methods_markdown() -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [f"| `{m.name}` | {m.space} | {cell(what_it_does(m))} | {cell(m.paper)} |" for m in all_methods()]
    return "| method | space | what it does | paper |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


@app.command()
def demo(
    workdir: Path = typer.Option(Path("out/demo"), help="where the demo builds checkpoints and writes merges (new, "
                                 "empty, or an earlier demo folder)"),
) -> None:
    """Build tiny real checkpoints, merge them with every applicable method, and check each output loads."""
    from ..demo import run_demo

    try:
        run_demo(workdir, Console())
    except TaskfuseError as e:
        _fail(e)


register_bench_commands(app, _fail)
register_learn_command(app, _fail)
register_search_command(app, _fail)
register_extract_command(app, _fail)
register_statistics_command(app, _fail)
register_route_command(app, _fail)
register_convert_command(app, _fail)
register_moe_command(app, _fail)
register_generate_command(app, _fail)
register_fetch_model_command(app, _fail)


for _command in app.registered_commands:  # typer's command list keeps a docstring's line breaks: ragged summaries
    if _command.short_help is None and _command.help is None and _command.callback is not None:
        _command.short_help = first_paragraph(_command.callback.__doc__)


def main() -> None:
    """The `taskfuse` console script."""
    merge_command.STANDALONE = True
    exit_cleanly_on_sigterm()
    try:
        app()
    except TaskfuseError as e:  # a command that let a typed error through still gets the one-paragraph message
        _print_error(e)
        sys.exit(2)
    except Exception as e:
        report_crash(e, console)
        sys.exit(CRASH_STATUS)


if __name__ == "__main__":
    main()
