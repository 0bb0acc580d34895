"""The public Python API; the CLI is a thin layer over these calls."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .execute import MergeResult, execute
from .errors import IncompatibleInputsError
from .execute.executor import Progress
from .io.checkpoint import Checkpoint
from .io.output import check_free_space, check_output_dir
from .plan.plan import Plan
from .plan.planner import build_plan
from .programs.base_among_models import check_base_not_among_models
from .programs.chat_template import chat_template_files
from .programs.depth_check import check_depth
from .programs.folded_floor_check import check_folded_floor
from .programs.whole_model_trim import apply_whole_model_trim
from .programs.wrapped_names import explain_wrapped_names
from .spec import MergeSpec, load_spec, parse_spec

SIDE_FILES_ALLOWANCE = 64 * 2**20  # config, tokenizer (tokenizer.json can be ~30 MB), model card, spec


def as_spec(spec: MergeSpec | str | Path | dict[str, Any]) -> MergeSpec:
    if isinstance(spec, MergeSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    return load_spec(spec)


def plan(spec: MergeSpec | str | Path | dict[str, Any], max_shard_size: int | str = "2GB") -> Plan:
    """The Plan for a spec, from checkpoint headers only."""
    merge_spec = as_spec(spec)
    check_folded_floor(merge_spec)
    check_base_not_among_models(merge_spec)
    return _planned(merge_spec, max_shard_size)[0]


def _planned(merge_spec: MergeSpec, max_shard_size: int | str) -> tuple[Plan, list[Checkpoint]]:
    try:
        the_plan, checkpoints = build_plan(merge_spec, max_shard_size)
    except IncompatibleInputsError as e:  # checkpoints that share no names may be one body saved two ways
        explain_wrapped_names(merge_spec, e)
        raise
    check_depth(merge_spec, the_plan)  # per-layer parameters written for another depth (programs/depth_check.py)
    return the_plan, checkpoints


def prepare(
    spec: MergeSpec | str | Path | dict[str, Any], out: str | Path, max_shard_size: int | str = "2GB"
) -> tuple[Plan, list[Checkpoint]]:
    """Everything that can fail before a merge starts: spec, output directory, checkpoints, plan."""
    merge_spec = as_spec(spec)
    check_output_dir(Path(out))
    check_folded_floor(merge_spec)  # a second Fisher floor would merge silently (programs/folded_floor_check.py)
    check_base_not_among_models(merge_spec)  # a zero task vector would too (programs/base_among_models.py)
    the_plan, checkpoints = _planned(merge_spec, max_shard_size)
    check_free_space(Path(out), sum(j.nbytes for j in the_plan.jobs) + SIDE_FILES_ALLOWANCE)
    return apply_whole_model_trim(the_plan, checkpoints), checkpoints  # reads data only for trim="model"


def merge(
    spec: MergeSpec | str | Path | dict[str, Any],
    out: str | Path,
    *,
    device: str = "cpu",
    threads: int | None = None,
    max_shard_size: int | str = "2GB",
    progress: Progress | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> MergeResult:
    """Merge as `spec` says and write a Hugging Face model directory to `out`; `extra_files` (name → content, e.g.
    a learned merge's record and figures) are written into it before it appears."""
    the_plan, checkpoints = prepare(spec, out, max_shard_size)
    files = {**chat_template_files(the_plan, checkpoints), **(extra_files or {})}
    return execute(the_plan, checkpoints, out, device=device, threads=threads, progress=progress, extra_files=files)


def merge_stages(
    path: str | Path,
    out: str | Path,
    *,
    intermediate_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    max_shard_size: int | str = "2GB",
):
    """Run a multi-stage file (merges separated by `---`, mergekit-multi's format) stage by stage, the final stage
    into `out` (programs/multi_merge.py); returns each stage's folder and whether it was reused."""
    from .programs.multi_merge import run_stages

    def merge_stage(spec: MergeSpec, folder: Path) -> MergeResult:
        return merge(spec, folder, device=device, threads=threads, max_shard_size=max_shard_size)
    return run_stages(path, out, intermediate_dir, merge_stage)
