"""Planning merges that read per-model statistics (RegMean's Grams, Fisher diagonals): which files, checked before
any tensor is read, and which of their tensors each job reads."""
from __future__ import annotations

from ..errors import CheckpointError, IncompatibleInputsError, SpecError, collect
from ..io.checkpoint import Checkpoint
from ..io.statistics_file import statistics_file, statistics_kind
from ..methods.registry import STATISTICS, MethodInfo, get_method
from ..spec.model import MergeSpec
from .plan import Source


def needed_kind(spec: MergeSpec) -> str | None:
    """The kind of statistics the spec's methods read, or None; one kind per spec (a file holds one)."""
    methods = [spec.method] + [ov.method for ov in spec.overrides if ov.method]
    kinds = sorted({get_method(m).statistics for m in methods} - {None})
    if len(kinds) > 1:
        raise SpecError(f"the spec's methods read different statistics ({', '.join(kinds)}), but each model names "
                        "one statistics file. Fix: merge with one of them, or in two steps.")
    return kinds[0] if kinds else None


def open_statistics(spec: MergeSpec) -> list[Checkpoint]:
    """Each model's statistics file, in model order; none when no method reads statistics (then giving some is an
    error: they would be silently ignored)."""
    kind = needed_kind(spec)
    given = [m for m in spec.models if m.statistics]
    if kind is None:
        if given:
            raise SpecError(f"model {given[0].path!r} names `statistics:`, but method {spec.method!r} does not read "
                            "statistics. Fix: remove them, or merge with regmean or fisher.")
        return []
    errors = [f"model {m.path!r} has no `statistics:` ({STATISTICS[kind]}). Fix: gather them with `taskfuse "
              f"statistics {m.path} --kind {kind} --data TASK.jsonl -o FOLDER` and add `statistics: FOLDER` to its "
              "entry." for m in spec.models if not m.statistics]
    opened = []
    for m in spec.models:
        if not m.statistics:
            continue
        try:
            found = statistics_kind(m.statistics, f"model {m.path!r}")
            if found != kind:
                errors.append(f"statistics of model {m.path!r} ({m.statistics}) hold {found!r}, but the merge reads "
                              f"{kind!r}. Fix: gather them with --kind {kind}.")
                continue
            opened.append(Checkpoint.open(statistics_file(m.statistics)))
        except CheckpointError as e:
            errors.append(str(e))
    collect(errors, SpecError, "the models' statistics cannot be used")
    return opened


def statistics_sources(info: MethodInfo, name: str, shape: tuple[int, ...], models: list[int],
                       files: list[Checkpoint], first: int) -> tuple[Source, ...]:
    """The statistics of tensor `name` for each model (spec positions `models`) that the job merges, as sources
    into the plan's checkpoints (the files start at index `first`); none when no file describes the tensor, which
    the method then merges without (RegMean: biases, norms, embeddings)."""
    if info.statistics is None:
        return ()
    having = [j for j in models if name in files[j].tensors]
    if not having:
        return ()
    if len(having) != len(models):
        lacking = ", ".join(files[j].ref for j in models if j not in having)
        raise IncompatibleInputsError(f"tensor {name!r} has statistics in some models' files but not in {lacking}. "
                                      "Fix: gather every model's statistics on the same architecture and kind.")
    want = (shape[1], shape[1]) if info.statistics == "gram" else tuple(shape)
    for j in models:
        got = files[j].tensors[name].shape
        if tuple(got) != want:
            raise IncompatibleInputsError(f"statistics of tensor {name!r} in {files[j].ref} have shape {list(got)}, "
                                          f"the merge needs {list(want)}. Fix: gather them on this model.")
    return tuple(Source(first + j, name) for j in models)
