"""`taskfuse merge`: a spec (taskfuse or mergekit YAML, one merge or several stages) into a Hugging Face folder, a
PEFT adapter or a GGUF, with a progress bar, a dry run, and every option an output does not use refused."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .. import api
from ..errors import SpecError, TaskfuseError, UsageError
from ..execute.device import resolve_device
from ..programs.chat_template import chat_template_files
from ..spec import MergeSpec
from .progress import progress_display

console = Console(stderr=True)
# Set by main(), the console script, and never by in-process callers such as tests' CliRunner.
STANDALONE = False


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def merge(
        spec: Path = typer.Argument(..., help="taskfuse or mergekit YAML spec"),
        out: Path = typer.Option(..., "-o", "--out", help="output folder: new, empty, or an earlier taskfuse merge "
                                 "(replaced); anything else is refused"),
        device: str = typer.Option("cpu", help="torch device for the arithmetic, e.g. cuda"),
        threads: Optional[int] = typer.Option(None, min=1, help="worker threads for the arithmetic (default: all "
                                              "cores)"),
        max_shard_size: str = typer.Option("2GB", help="largest shard in bytes or with a unit: 500MB, 2GB"),
        dry_run: bool = typer.Option(False, "--dry-run", help="plan and validate only; write nothing"),
        as_adapter: bool = typer.Option(False, "--as-adapter", help="write a PEFT LoRA adapter on the spec's base "
                                        "instead of a full model: exact (concatenated factors) for a linear merge of "
                                        "LoRA adapters, else with --rank/--energy"),
        rank: Optional[int] = typer.Option(None, help="with --as-adapter: re-factorise every update at this rank"),
        energy: Optional[float] = typer.Option(None, help="with --as-adapter: per layer, the smallest rank keeping "
                                               "this fraction of the update's squared singular values"),
        fmt: str = typer.Option("hf", "--format", help="hf (safetensors folder) or gguf (OUT/<OUT name>-<outtype>"
                                ".gguf; llama, mistral, qwen2, qwen3, gemma3)"),
        outtype: str = typer.Option("f16", help="with --format gguf: f32, f16, bf16 or q8_0"),
        intermediate_dir: Optional[Path] = typer.Option(None, help="a multi-stage SPEC (merges separated by ---): "
                                                        "keep each named stage here and reuse those whose spec is "
                                                        "unchanged"),
    ) -> None:
        """Merge the models of SPEC into a Hugging Face directory OUT (or a PEFT adapter, --as-adapter, or a GGUF,
        --format gguf). A SPEC of several merges separated by `---` (mergekit-multi's format) runs them stage by
        stage."""
        try:
            _merge(spec, out, device, threads, max_shard_size, dry_run, as_adapter or rank is not None
                   or energy is not None, rank, energy, fmt, outtype, intermediate_dir)
        except TaskfuseError as e:
            fail(e)


def _merge(spec: Path, out: Path, device: str, threads: Optional[int], max_shard_size: str, dry_run: bool,
           to_adapter: bool, rank: Optional[int], energy: Optional[float], fmt: str, outtype: str,
           intermediate_dir: Optional[Path]) -> None:
    """The merge command's choice of output; a typed error goes to the command, which reports it."""
    if _is_multi_stage(spec):
        return _merge_stages(spec, out, intermediate_dir, dry_run, device, threads, max_shard_size,
                             to_adapter or fmt != "hf" or outtype != "f16")
    if intermediate_dir is not None:
        raise UsageError(f"--intermediate-dir is for a multi-stage spec (merges separated by ---), and {spec} holds "
                         "one merge. Fix: drop it.")
    _refuse_ignored_options(to_adapter, fmt, device, threads, max_shard_size, outtype)
    merge_spec = api.as_spec(spec) if to_adapter or fmt != "hf" else spec  # parsed once: the check below, the merge
    if merge_spec is not spec and merge_spec.chat_template is not None:
        raise UsageError("the spec's chat_template is written into a model folder's tokenizer files, which a "
                         f"{'PEFT adapter' if to_adapter else f'--format {fmt}'} output does not carry. Fix: "
                         "merge into a folder (no --as-adapter, --rank, --energy or --format gguf), or drop "
                         "chat_template.")
    if to_adapter:
        return _merge_to_adapter(merge_spec, out, rank, energy, fmt, dry_run)
    if fmt != "hf" and not dry_run:
        return _merge_to_gguf(merge_spec, out, fmt, outtype, device, threads)
    resolve_device(device)
    if dry_run:
        the_plan, checkpoints = api.prepare(spec, out, max_shard_size)  # every check a merge makes before writing
        chat_template_files(the_plan, checkpoints)  # `auto` finds a template
        console.print(f"dry run: {out} can be written; {json.dumps(the_plan.summary())}", soft_wrap=True)
        return
    result = _merge_showing_progress(spec, out, device, threads, max_shard_size)
    console.print(f"wrote {result.out} ({len(result.plan.jobs)} tensors, {len(result.plan.shards)} shard(s)) in "
                  f"{result.seconds:.1f}s, peak RSS {result.peak_rss_bytes / 2**20:.0f} MiB")
    exit_now_if_standalone()


@contextmanager
def _merging_bar() -> Iterator[Callable[[int, int, str], None]]:
    """A bar of the tensors merged; yields the engine's progress callback (done, total, tensor name)."""
    with progress_display(console, "merging") as bar:
        task = bar.add_task("", total=None)
        yield lambda done, total, name: bar.update(task, completed=done, total=total, description=name)


def _merge_showing_progress(spec, out: Path, device: str, threads: Optional[int], max_shard_size: str):
    """api.merge with a bar of the tensors merged."""
    with _merging_bar() as progress:
        return api.merge(spec, out, device=device, threads=threads, max_shard_size=max_shard_size, progress=progress)


def _is_multi_stage(spec: Path) -> bool:
    from ..spec.load import read_documents
    try:
        return len(read_documents(spec)) > 1
    except TaskfuseError:
        return False  # the single-spec path reports it


def _merge_stages(spec: Path, out: Path, intermediate_dir: Optional[Path], dry_run: bool, device: str,
                  threads: Optional[int], max_shard_size: str, other_output: bool) -> None:
    from ..programs.multi_merge import ordered, read_stages, run_stages
    if other_output:
        raise UsageError("a multi-stage merge writes its stages and its result as model folders: --as-adapter, "
                         "--rank, --energy, --format and --outtype do not apply. Fix: drop them, then convert the "
                         "result (`taskfuse extract-lora`, or a one-stage `taskfuse merge --format gguf`).")
    if dry_run:
        stages = ordered(read_stages(spec), spec)
        console.print(f"dry run: {len(stages)} stages in this order: "
                      f"{', '.join(s.name or '(final)' for s in stages)}; the final one into {out}", soft_wrap=True)
        return
    resolve_device(device)

    def merge_stage(merge_spec, folder: Path):
        return _merge_showing_progress(merge_spec, folder, device, threads, max_shard_size)

    def report(i: int, n: int, stage, reused: bool) -> None:
        what = "reused, its spec unchanged" if reused else "merging"
        console.print(f"stage {i + 1}/{n} {stage.name or '(final)'}: {what}")

    runs = run_stages(spec, out, intermediate_dir, merge_stage, report)
    console.print(f"wrote {out} after {len(runs)} stages ({sum(r.reused for r in runs)} reused)", soft_wrap=True)


def _refuse_ignored_options(to_adapter: bool, fmt: str, device: str, threads: Optional[int], max_shard_size: str,
                            outtype: str) -> None:
    """An option the chosen output does not use is refused, not dropped: a user who asks for `--device cuda` and gets
    a CPU merge (the adapter output merges on the CPU, in one pass) would take it for a GPU one."""
    ignored = [f"--{name.replace('_', '-')} {value}" for name, value, default, used in (
        ("device", device, "cpu", not to_adapter), ("threads", threads, None, not to_adapter),
        ("max_shard_size", max_shard_size, "2GB", not to_adapter and fmt == "hf"),
        ("outtype", outtype, "f16", fmt == "gguf")) if value != default and not used]
    if ignored:
        output = "a PEFT adapter (--as-adapter, --rank, --energy)" if to_adapter else f"--format {fmt}"
        verb = "has" if len(ignored) == 1 else "have"
        raise UsageError(f"{', '.join(ignored)} {verb} no effect on {output}: --device and --threads apply to a full "
                         "model's merge, --max-shard-size to a safetensors folder, --outtype to --format gguf. "
                         "Fix: drop them, or choose the output they apply to.")


def _merge_to_gguf(spec: MergeSpec, out: Path, fmt: str, outtype: str, device: str, threads: Optional[int]) -> None:
    from ..programs.gguf_output import gguf_name, merge_to_gguf
    if fmt != "gguf":
        raise UsageError(f"--format {fmt!r}: choose hf or gguf.")
    resolve_device(device)
    with _merging_bar() as progress:
        summary = merge_to_gguf(spec, out, outtype, device=device, threads=threads, progress=progress)
    console.print(f"wrote {out / gguf_name(out, outtype)} ({summary['tensors']} tensors as {summary['types']})",
                  soft_wrap=True)


def _merge_to_adapter(merge_spec: MergeSpec, out: Path, rank: Optional[int], energy: Optional[float], fmt: str,
                      dry_run: bool) -> None:
    from ..programs.extract_lora import RankRule
    from ..programs.merge_to_adapter import merge_to_adapter
    from .adapter_loading import how_to_load
    if fmt != "hf":  # before, the adapter was written and --format was ignored
        raise UsageError(f"--format {fmt} writes a full model, and --as-adapter (or --rank/--energy) a PEFT "
                         "adapter in safetensors. Fix: drop one of them.")
    if dry_run:  # before, --dry-run was ignored here and the adapter written
        _dry_run_adapter(merge_spec, out, rank, energy)
        return
    if merge_spec.depth is not None:  # the exact route plans without api's checks: a depth is checked here
        api.plan(merge_spec)
    with console.status("merging into an adapter"):
        report = merge_to_adapter(merge_spec, out, None if rank is None and energy is None else
                                  RankRule(rank, energy))
    how = ("exact: the adapters' factors concatenated" if report["exact"] else
           f"re-factorised, mean relative error {report['summary']['relative_error']['mean']:.4f}")
    console.print(f"wrote the adapter {out} ({how}; details in {out / report['report_file']}); load it with "
                  f"{how_to_load(out)}", soft_wrap=True)


def _dry_run_adapter(merge_spec: MergeSpec, out: Path, rank: Optional[int], energy: Optional[float]) -> None:
    """What a dry run can check of an adapter output without merging: the rank rule, the spec, its base, the
    checkpoints and the plan, and the output folder."""
    from ..io.output import check_output_dir
    from ..programs.extract_lora import RankRule
    rule = None if rank is None and energy is None else RankRule(rank, energy)
    if merge_spec.base is None:
        raise SpecError("an adapter output is an update of a base: add `base:` to the spec.")
    check_output_dir(out, "adapter")
    the_plan = api.plan(merge_spec)
    how = (f"re-factorised by truncated SVD at {f'rank {rank}' if rank is not None else f'energy {energy}'}"
           if rule else "exact where the merge is a sum of LoRA updates, which is checked while writing")
    console.print(f"dry run: the adapter {out} can be written ({how}); {json.dumps(the_plan.summary())}",
                  soft_wrap=True)


def exit_now_if_standalone() -> None:
    """End the process without the interpreter's teardown once a merge is complete (its output renamed into
    place): unloading torch's modules and freeing the buffer pool took 0.3-1 s here, a tenth of a SLERP merge of
    the benchmark model. Nothing is left to clean up; output streams are flushed first."""
    if STANDALONE:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
