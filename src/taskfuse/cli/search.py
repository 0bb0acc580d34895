"""`taskfuse search`: CMA-ES or random search of a method's parameters on the zoo, trials on processes or Ray."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError, UsageError
from .bench import VARIANT_HELP, _progress_bars, _zoo_reporter

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def search(method: str = typer.Argument(..., help="a registered delta method, e.g. ties or task_arithmetic"),
               out: Path = typer.Option(..., "-o", "--out", help="folder for the best merge (new, empty, or an "
                                        "earlier taskfuse merge)"),
               variant: str = typer.Option("quick", help=VARIANT_HELP),
               task_file: list[Path] = typer.Option([], "--task-file", help="your own .jsonl/.csv task"),
               algorithm: str = typer.Option("cma", help="cma (CMA-ES) or random"),
               budget: int = typer.Option(40, min=1, help="trials (merge + validation score) in all"),
               popsize: int = typer.Option(8, min=2, help="trials per generation, run in parallel"),
               seed: int = typer.Option(0, help="seeds the search"),
               pool: str = typer.Option("process", help="where trials run: process (local processes) or ray"),
               workers: Optional[int] = typer.Option(None, min=1, help="parallel trials (default: as many as fit "
                                                     "in cores and memory)"),
               ray_address: Optional[str] = typer.Option(None, help="an existing Ray cluster (implies --pool ray)"),
               log: Optional[Path] = typer.Option(None, help="trial log, resumed if it exists (default: OUT.search"
                                                  ".jsonl beside the output)")) -> None:
        """Search per-expert weights and the method's λ and density for the best validation score; write the best
        merge. A killed search resumes from its log."""
        from .. import api
        from ..bench.search_zoo import WORKER_BYTES, score_trial, search_space, trial_spec
        from ..io.output import check_output_dir
        from ..methods import get_method
        from ..programs.search import SearchConfig, search as run_search
        from ..programs.trial_pool import threads_per_worker, trial_pool, workers_that_fit
        from ..zoo.build import build_zoo
        from ..zoo.recipe import variant_named
        try:
            config = SearchConfig(algorithm, budget, popsize, seed=seed)
            if get_method(method).space != "delta":
                raise UsageError(f"{method} merges weights, not task vectors: search per-expert weights of a delta "
                                 "method (task_arithmetic, ties, dare_ties, ...).")
            check_output_dir(out, "merge")
            log_path = log or out.with_name(out.name + ".search.jsonl")
            task_files = tuple(map(str, task_file))
            with _progress_bars() as bars:
                zoo = build_zoo(variant_named(variant), 1, _zoo_reporter(bars), task_files)
                count = workers or workers_that_fit(WORKER_BYTES, popsize)
                threads = threads_per_worker(count)
                space = search_space(zoo, method)
                bar = bars.add_task(method, total=budget, stage="search")
                trials = trial_pool(pool, count, ray_address)
                try:
                    found = run_search(
                        space, lambda params: trials.map(score_trial, [
                            (variant, task_files, method, p, seed, threads) for p in params]),
                        config, log_path, {"method": method, "variant": variant, "task_files": list(task_files)},
                        lambda done, total, best: bars.update(bar, completed=done,
                                                              description=f"{method} best {best * 100:.2f}%"))
                finally:
                    trials.close()
            record = {"method": method, "algorithm": algorithm, "config": asdict(config),
                      "space": [asdict(d) for d in space], "best": found.best,
                      "best_validation_normalized": found.best_score, "trials": found.trials,
                      "evaluated_now": found.evaluated, "log": str(log_path),
                      "pool": {"kind": trials.kind, "workers": trials.workers},
                      "data_seen": "labelled validation split of each task (scores only)"}
            api.merge(trial_spec(zoo, method, found.best, seed), out,
                      extra_files={"taskfuse_search.json": json.dumps(record, indent=1).encode()})
        except TaskfuseError as e:
            fail(e)
        console.print(f"wrote {out}: best of {budget} {algorithm} trials ({found.evaluated} run now, the rest from "
                      f"{log_path}), validation {found.best_score * 100:.2f}% normalized with {found.best}",
                      soft_wrap=True)
