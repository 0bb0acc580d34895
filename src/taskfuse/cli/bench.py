"""`taskfuse zoo | eval | bench`: the offline benchmark's commands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import TaskfuseError, UsageError
from .progress import progress_display

console = Console(stderr=True)
# each run's wall time in its committed result (benchmarks/results/bench-<run>/result.json; a test keeps them equal)
COMMITTED_MINUTES = {"full": 104.0, "quick": 6.1, "routing": 53.6, "llm": 32.4}
VARIANT_HELP = "zoo size: full (8 tasks), quick (4 tasks, fewer examples), tiny (2 tasks, for tests)"


def _progress_bars():
    return progress_display(console)


def _zoo_reporter(bars):
    bar = bars.add_task("", total=None, stage="zoo")

    def report(task: str, stage: str, done: int, total: int) -> None:
        bars.update(bar, completed=done, total=total, description=f"{task}: {stage}")
    return report


def _bench_reporter(bars):
    ids: dict[str, int] = {}

    def report(stage: str, done: int, total: int, what: str) -> None:
        if stage not in ids:
            ids[stage] = bars.add_task("", total=total, stage=stage)
        bars.update(ids[stage], completed=done, total=total, description=what)
    return report


def learned_names(option: str) -> tuple[str, ...]:
    from ..bench.learned import LEARNED
    from ..bench.learned_over_merge import OVER_MERGE_ROWS
    from ..bench.search_rows import SEARCH_ROWS
    from ..bench.statistics_rows import STATISTICS_ROWS
    known = (*LEARNED, *STATISTICS_ROWS, *SEARCH_ROWS, *OVER_MERGE_ROWS)
    if option == "all":
        return known
    if option == "none":
        return ()
    names = tuple(name.strip() for name in option.split(","))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown learned row(s) {', '.join(map(repr, unknown))}. Fix: give 'all', 'none' or names "
                         f"from {', '.join(known)}.")
    return names


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def zoo(variant: str = typer.Option("full", help=VARIANT_HELP),
            workers: int = typer.Option(1, min=1, help="training processes (each gets cores/workers threads)"),
            task_file: list[Path] = typer.Option([], "--task-file",
                                                 help="your own .jsonl/.csv task (repeatable)")) -> None:
        """Build (or find in the cache) one full fine-tune and one LoRA expert per task."""
        from ..zoo.build import build_zoo
        from ..zoo.recipe import variant_named
        try:
            with _progress_bars() as bars:
                built = build_zoo(variant_named(variant), workers, _zoo_reporter(bars), tuple(map(str, task_file)))
        except TaskfuseError as e:
            fail(e)
        table = Table("task", "expert folder", "train s", "final loss (full / LoRA)")
        for name, e in built.experts.items():
            info = e.info
            losses = info["final_loss"]
            table.add_row(name, str(e.path), str(info["seconds"]), f"{losses['full']} / {losses['lora']}")
        Console().print(table)

    def _routing_study(variant: str, target: Path, task_files: tuple[str, ...]) -> None:
        from ..bench.routing_report import markdown, write_routing_report
        from ..bench.routing_study import run_routing
        from ..io.output import check_output_dir
        try:
            check_output_dir(target, "report")
            with _progress_bars() as bars:
                result = run_routing(variant, _bench_reporter(bars), _zoo_reporter(bars), task_files)
            write_routing_report(result, target)
        except TaskfuseError as e:
            fail(e)
        print(markdown(result))
        console.print(f"report: {target / 'report.html'}; {result['seconds']} s")

    def _llm_bench(quick: bool, target: Path, task_files: tuple[str, ...], fusion: bool,
                   learned: str | None, routing: bool) -> None:
        from ..errors import UsageError
        from ..io.output import check_output_dir
        from ..bench.llm_report import markdown
        from ..llm.bench import run_llm_bench
        try:
            if learned not in (None, "all", "none", "atlas"):
                raise UsageError(f"--learned {learned}: the LLM benchmark's learned row is atlas. Fix: --learned "
                                 "atlas (or all: the default), or none to leave it out.")
            if routing and (fusion or learned not in (None, "none")):
                raise UsageError("--llm --routing runs the routed rows instead of the merges: --fusion and "
                                 "--learned do not apply. Fix: run them without --routing.")
            check_output_dir(target, "report")
            result = run_llm_bench(target, quick, task_files, log=lambda line: console.print(line, soft_wrap=True),
                                   fusion=fusion, learned=learned != "none", routing=routing)
        except TaskfuseError as e:
            fail(e)
        print(markdown(result))
        console.print(f"report: {target / 'report.html'}; {result['seconds']} s")

    @app.command("eval")
    def evaluate(model: Path = typer.Argument(..., help="encoder directory (e.g. a merge of the zoo's experts)"),
                 tasks: Optional[str] = typer.Option(None, help="comma-separated task names (default: the zoo's)"),
                 variant: str = typer.Option("full", help=VARIANT_HELP),
                 split: str = typer.Option("test", help="validation or test"),
                 task_file: list[Path] = typer.Option([], "--task-file", help="your own .jsonl/.csv task"),
                 json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report as JSON")) -> None:
        """Score MODEL on each task with the experts' heads: accuracy, macro-F1, normalised accuracy."""
        from ..bench.evaluate import evaluate_model
        try:
            with _progress_bars() as bars:
                report = evaluate_model(model, tuple(tasks.split(",")) if tasks else None, variant, split,
                                        tuple(map(str, task_file)), _zoo_reporter(bars))
        except TaskfuseError as e:
            fail(e)
        table = Table("task", "accuracy %", "macro-F1 %", "normalized %", "expert %", "zero-shot %",
                      title=f"{model} on the {split} split")
        for t, s in report["scores"].items():
            refs = report["references"]
            table.add_row(t, f"{s['accuracy'] * 100:.1f}", f"{s['macro_f1'] * 100:.1f}",
                          f"{report['normalized'][t] * 100:.1f}", f"{refs['expert'][t]['accuracy'] * 100:.1f}",
                          f"{refs['zero_shot'][t]['accuracy'] * 100:.1f}")
        Console().print(table)
        Console().print(f"average accuracy {report['average']['accuracy'] * 100:.1f}%, normalized "
                        f"{report['average']['normalized'] * 100:.1f}% ({report['seconds']} s)")
        if json_out:
            json_out.write_text(json.dumps(report, indent=1))

    @app.command()
    def bench(variant: Optional[str] = typer.Option(None, help=VARIANT_HELP + " (default: quick)"),
              full: bool = typer.Option(False, "--full", help="the full benchmark: 8 tasks, every grid point, "
                                        f"every learned row ({COMMITTED_MINUTES['full']} minutes in the committed "
                                        "run on 2 cores, the experts cached)"),
              quick: bool = typer.Option(False, "--quick", help="the default: 4 tasks, fewer examples, two grid "
                                         f"points per method ({COMMITTED_MINUTES['quick']} minutes from an empty "
                                         "cache on 2 cores in the committed run)"),
              out: Path = typer.Option(Path("out/bench"), help="report folder: created, or replaced if it holds an "
                                       "earlier report; anything else is refused"),
              workers: int = typer.Option(1, min=1, help="processes for building missing experts"),
              trial_workers: int = typer.Option(1, min=1, help="data-free grid trials at once (1: one after "
                                                "another in this process; more: a process pool or Ray, each "
                                                "trial with cores/N threads)"),
              pool: str = typer.Option("process", help="with --trial-workers > 1: process or ray"),
              ray_address: Optional[str] = typer.Option(None, help="grid trials on this Ray cluster (implies "
                                                        "--pool ray)"),
              task_file: list[Path] = typer.Option([], "--task-file", help="your own .jsonl/.csv task"),
              learned: Optional[str] = typer.Option(None, help="learned rows (AdaMerging, aTLAS, Self "
                                                    "Positioning, RegMean, Fisher, CMA-ES and random search, and "
                                                    "aTLAS or AdaMerging started from the best data-free merge: "
                                                    "NAME_over_best): "
                                                    "'all', 'none' or comma-separated names (default: all with "
                                                    "--full, none otherwise; with --llm: atlas, the default, or "
                                                    "none)"),
              routing: bool = typer.Option(False, "--routing", help="instead of merging: compose the zoo's LoRA "
                                           "adapters (Arrow, LoraHub, ...) on every task and on each task held out "
                                           f"({COMMITTED_MINUTES['routing']} minutes for --full with one --task-file "
                                           "on 2 cores in the committed run, the experts cached); "
                                           "with --llm: Arrow, PHATGOOSE and MHR over the LLM's LoRA experts"),
              llm: bool = typer.Option(False, "--llm", help="instead of the encoder: the LLM benchmark (SmolLM2-135M, "
                                       "LoRA experts on 6 generative tasks, every data-free merge; "
                                       f"{COMMITTED_MINUTES['llm']} minutes on 2 cores in the committed run, "
                                       "training the experts included; --quick for a short run)"),
              fusion: bool = typer.Option(False, "--fusion", help="with --llm: add the decode-time rows (Dynamic "
                                          "Logits Fusion, proxy tuning); about 8x a merge's evaluation")) -> None:
        """Build the zoo, merge it with every data-free method (tuned on validation) and every learned method
        (coefficients learned on validation data), judge on test, report."""
        from ..bench.report import write_report
        from ..bench.run import run_bench
        from ..programs.trial_pool import trial_pool
        from ..bench.table import markdown
        from ..errors import UsageError
        from ..io.output import check_output_dir
        asked = {name for name, on in (("full", full), ("quick", quick), (variant, variant is not None)) if on}
        if len(asked) > 1:
            fail(UsageError(f"choose one benchmark size, not {' and '.join(sorted(asked))}: --full, --quick (the "
                            "default) or --variant NAME."))
        chosen = asked.pop() if asked else "quick"
        try:
            rows = learned_names(learned or ("all" if chosen == "full" else "none"))
        except TaskfuseError as e:
            fail(e)
        target = out / chosen if out == Path("out/bench") else out
        if llm:
            _llm_bench(quick, out / ("llm-routing" if routing else "llm") if out == Path("out/bench") else out,
                       tuple(map(str, task_file)), fusion, learned, routing)
            return
        if routing:
            _routing_study(chosen, out / f"routing-{chosen}" if out == Path("out/bench") else out,
                           tuple(map(str, task_file)))
            return
        try:
            check_output_dir(target, "report")  # refuse a foreign folder now, not after the whole run
            if pool not in ("process", "ray"):
                raise UsageError(f"--pool {pool}: use process or ray.")
            kind = "ray" if ray_address else pool if trial_workers > 1 else "in-process"
            trials = trial_pool(kind, trial_workers, ray_address)
            try:
                with _progress_bars() as bars:
                    result = run_bench(chosen, workers, tuple(map(str, task_file)), _bench_reporter(bars),
                                       _zoo_reporter(bars), rows, trials)
            finally:
                trials.close()
            write_report(result, target)
        except TaskfuseError as e:
            fail(e)
        print(markdown(result))
        console.print(f"report: {target / 'report.html'} (JSON, Markdown and PNG figures beside it); "
                      f"{result['seconds']['total']} s in all, zoo {result['seconds']['zoo']} s")
