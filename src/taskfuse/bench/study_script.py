"""The main() every study script in benchmarks/ shares: its options, the report folder checked before the run (not
after an hour of it), the study run in a temporary folder with its progress printed, and the result written with
what produced it (bench/provenance.py)."""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..io.output import check_output_dir
from .provenance import code_commit, command_line, machine, write_result

# (variant, work folder, a line printer, the learned rows' steps or None) -> the study's part of result.json
Study = Callable[[str, Path, Callable[[str], None], "int | None"], dict]


def run_study_script(description: str, default_out: Path, study: Study, data: str,
                     markdown: Callable[[dict], str]) -> None:
    """Parse --variant/--out/--steps, run `study` and write result.json (command, commit, machine, the study's
    fields, `data`: which split it learned and was scored on, seconds) and results.md from `markdown`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--variant", default="full")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--steps", type=int, default=None, help="the learned rows' steps (default: the variant's)")
    args = parser.parse_args()
    check_output_dir(args.out, "report")
    started, code = time.perf_counter(), code_commit()
    with tempfile.TemporaryDirectory(prefix="taskfuse-study-") as work:
        found = study(args.variant, Path(work), lambda line: print(line, flush=True), args.steps)
    result = {"command": command_line(), "code": code, "machine": machine(), **found, "data": data,
              "seconds": round(time.perf_counter() - started, 1)}
    write_result(args.out, result, markdown(result))
    print(markdown(result))
