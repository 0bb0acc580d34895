"""Build a Plan from a MergeSpec using checkpoint headers only: no tensor data is read here.

Every problem found (shapes, vocabularies, missing tensors, bad parameters) is collected and reported at once.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from fnmatch import fnmatch
from typing import Any

from huggingface_hub.serialization import split_state_dict_into_shards_factory
from huggingface_hub.serialization._base import parse_size_to_int

from ..errors import CheckpointError, IncompatibleInputsError, SpecError, TaskfuseError, collect
from ..io.checkpoint import Checkpoint, TensorMeta
from ..io.layout import DTYPE_NAMES
from ..methods.registry import MethodInfo, get_method
from ..spec.model import MergeSpec
from . import schedule
from .plan import Plan, Source, TensorJob
from .stacking import copy_job, plan_slices
from .statistics import open_statistics, statistics_sources
from .vocab_alignment import aligned_checkpoints

VOCAB_HINTS = ("embed", "lm_head", "wte", "word_embeddings", "output.weight")


class PlanContext:
    """The spec, its opened checkpoints and caches shared by the per-tensor planning steps."""

    def __init__(self, spec: MergeSpec, checkpoints: list[Checkpoint]):
        self.spec, self.checkpoints = spec, checkpoints
        self.has_base = spec.base is not None
        self.offset = 1 if self.has_base else 0  # checkpoint index of spec.models[0]
        self.reference = checkpoints[0]
        self.num_layers = _num_layers(self.reference)
        self._params_cache: dict[str, dict] = {}
        self.statistics: list[Checkpoint] = []  # per spec model, for methods that read statistics

    def model_label(self, ckpt: int) -> str:
        return f"{'base' if self.has_base and ckpt == 0 else 'model'} {self.checkpoints[ckpt].ref!r}"

    def params_for(self, info: MethodInfo, values: dict[str, Any], where: str) -> dict[str, Any]:
        key = info.name + json.dumps(values, sort_keys=True, default=str)
        if key not in self._params_cache:
            self._params_cache[key] = asdict(info.make_params(values, where))
        return self._params_cache[key]


def open_checkpoints(spec: MergeSpec) -> list[Checkpoint]:
    refs = ([spec.base] if spec.base else []) + [m.path for m in spec.models]
    opened, errors = [], []
    for ref in refs:
        try:
            opened.append(Checkpoint.open(ref))
        except CheckpointError as e:
            errors.append(e)
    # keep the subtype (e.g. HubUnavailableError) when every failure shares it
    kind = type(errors[0]) if errors and all(type(e) is type(errors[0]) for e in errors) else CheckpointError
    collect([str(e) for e in errors], kind, "cannot open the checkpoints")
    return opened


def check_method_fits(info: MethodInfo, spec: MergeSpec) -> None:
    n = len(spec.models)
    if info.space == "delta" and spec.base is None:
        raise SpecError(f"method {info.name!r} merges task vectors (model − base) and needs `base`. "
                        "Fix: add `base: <path of the pre-trained model>` to the spec.")
    if n < info.min_models or (info.max_models is not None and n > info.max_models):
        want = info.min_models if info.min_models == info.max_models else f"at least {info.min_models}"
        raise SpecError(f"method {info.name!r} takes {want} models, the spec lists {n}.")


def build_plan(spec: MergeSpec, max_shard_size: int | str = "2GB") -> tuple[Plan, list[Checkpoint]]:
    """The Plan for `spec` and the opened checkpoints it refers to (index-aligned with Plan.checkpoints)."""
    info = get_method(spec.method)
    for ov in spec.overrides:
        if ov.method:
            get_method(ov.method)
    check_method_fits(info, spec)
    ckpts = aligned_checkpoints(spec, open_checkpoints(spec))
    ctx = PlanContext(spec, ckpts)
    ctx.statistics = open_statistics(spec)
    if spec.slices:
        jobs = plan_slices(ctx, output_dtype(ctx))
        updates = {"num_hidden_layers": sum(b - a for a, b in (s.layers for s in spec.slices))}
    else:
        jobs, updates = plan_merge(ctx), {}
    jobs = assign_shards(jobs, max_shard_size)
    return Plan(
        checkpoints=tuple(c.ref for c in ckpts + ctx.statistics), has_base=ctx.has_base, jobs=tuple(jobs),
        seed=spec.seed, statistics_from=len(ckpts) if ctx.statistics else None,
        dtype=output_dtype(ctx), config_from=_index_of(ctx, spec.config_from),
        tokenizer_from=_index_of(ctx, spec.tokenizer_from or spec.config_from), config_updates=updates,
        spec=spec.model_dump(mode="json"),
    ), ckpts + ctx.statistics


def plan_merge(ctx: PlanContext) -> list[TensorJob]:
    errors: list[str] = []
    jobs = []
    for name, meta in ctx.reference.tensors.items():
        try:
            jobs.append(plan_tensor(ctx, name, meta))
        except TaskfuseError as e:
            errors.append(str(e))
    errors += extra_tensor_errors(ctx)
    kind = SpecError if errors and all("parameter" in e for e in errors) else IncompatibleInputsError
    collect(errors, kind, "the checkpoints cannot be merged as specified")
    return [j for j in jobs if j is not None]


def plan_tensor(ctx: PlanContext, name: str, meta: TensorMeta) -> TensorJob:
    models = range(ctx.offset, len(ctx.checkpoints))
    rules = ctx.spec.tensor_rules
    if not meta.dtype.is_floating_point:
        if rules.integer == "error":
            raise IncompatibleInputsError(f"tensor {name!r} is {meta.dtype}; tensor_rules.integer is 'error'")
        return copy_job(meta, Source(0, name), name, output_dtype(ctx), "copy_base")
    present = [i for i in models if name in ctx.checkpoints[i].tensors]
    missing = [i for i in models if i not in present]
    if missing:
        if rules.missing == "error":
            raise missing_error(ctx, name, missing)
        if rules.missing == "copy_base" or not present:  # checkpoint 0: the base, or the first model
            return copy_job(meta, Source(0, name), name, output_dtype(ctx), "copy_base")
    check_shapes(ctx, name, meta, present)
    models = [i - ctx.offset for i in present]
    method, params = method_and_params(ctx, name, models)
    info = get_method(method)
    return TensorJob(
        name=name, method=method, params=params, sources=tuple(Source(i, name) for i in present),
        weights=model_weights(ctx, name, models),
        base=Source(0, name) if ctx.has_base and info.space == "delta" else None,
        shape=meta.shape, dtype=output_dtype(ctx),
        statistics=statistics_sources(info, name, meta.shape, models, ctx.statistics, len(ctx.checkpoints)))


def missing_error(ctx: PlanContext, name: str, missing: list[int]) -> IncompatibleInputsError:
    who = ", ".join(ctx.model_label(i) for i in missing)
    return IncompatibleInputsError(
        f"tensor {name!r} is missing from {who}. Fix: set tensor_rules.missing to 'copy_base' or "
        "'merge_present', or use checkpoints of the same architecture.")


def check_shapes(ctx: PlanContext, name: str, meta: TensorMeta, present: list[int]) -> None:
    bad = [(i, ctx.checkpoints[i].tensors[name].shape) for i in present
           if ctx.checkpoints[i].tensors[name].shape != meta.shape]
    if not bad:
        return
    who = ", ".join(f"{ctx.model_label(i)} has {list(s)}" for i, s in bad)
    if any(h in name for h in VOCAB_HINTS) and all(s[1:] == meta.shape[1:] for _, s in bad):
        raise IncompatibleInputsError(
            f"vocabulary size mismatch in tensor {name!r}: {ctx.model_label(0)} has {meta.shape[0]} rows, {who}. "
            "Fix: save each model's tokenizer beside its weights, so that taskfuse can match the rows by token.")
    raise IncompatibleInputsError(f"shape mismatch in tensor {name!r}: {ctx.model_label(0)} has {list(meta.shape)}"
                                  f", {who}. Fix: merge only fine-tunes of the same base architecture.")


def extra_tensor_errors(ctx: PlanContext) -> list[str]:
    if ctx.spec.tensor_rules.extra == "drop":
        return []
    errors = []
    for i in range(1, len(ctx.checkpoints)):
        extra = sorted(set(ctx.checkpoints[i].tensors) - set(ctx.reference.tensors))
        if extra:
            shown = ", ".join(repr(e) for e in extra[:5]) + (" ..." if len(extra) > 5 else "")
            errors.append(f"{ctx.model_label(i)} has {len(extra)} tensor(s) absent from {ctx.model_label(0)}: "
                          f"{shown}. Fix: set tensor_rules.extra to 'drop' if they are not needed (e.g. task heads).")
    return errors


def method_and_params(ctx: PlanContext, name: str, models: list[int]) -> tuple[str, dict[str, Any]]:
    """Method and validated parameters for tensor `name`: top-level, then overrides, per-model, schedules."""
    method, values = ctx.spec.method, dict(ctx.spec.params)
    for ov in ctx.spec.overrides:
        if any(fnmatch(name, g) for g in ov.globs):
            if ov.method and ov.method != method:
                method, values = ov.method, {}
            values.update(ov.params)
    info = get_method(method)
    values = schedule.resolve(values, name, ctx.num_layers)
    if method == ctx.spec.method:
        values.update(per_model_values(ctx, info, name, models, values))
    return method, ctx.params_for(info, values, f"tensor {name!r}")


def model_weights(ctx: PlanContext, name: str, models: list[int]) -> tuple[float, ...]:
    """Each model's `weight`, unless an override matching `name` gives per-model weights (the last one wins)."""
    weights = [m.weight for m in ctx.spec.models]
    for ov in ctx.spec.overrides:
        if ov.weights is not None and any(fnmatch(name, g) for g in ov.globs):
            weights = ov.weights
    return tuple(weights[j] for j in models)


def per_model_values(ctx: PlanContext, info: MethodInfo, name: str, models: list[int], shared: dict) -> dict:
    keys = sorted({k for j in models for k in ctx.spec.models[j].params})
    defaults = {f.name: f.default for f in info.params.__dataclass_fields__.values()}
    out = {}
    for key in keys:
        fallback = shared.get(key, defaults.get(key))
        raw = [ctx.spec.models[j].params.get(key, fallback) for j in models]
        out[key] = tuple(schedule.resolve({key: v}, name, ctx.num_layers)[key] for v in raw)
    return out


def output_dtype(ctx: PlanContext) -> str:
    if ctx.spec.dtype:
        return ctx.spec.dtype
    for meta in ctx.reference.tensors.values():
        if meta.dtype in DTYPE_NAMES:
            return DTYPE_NAMES[meta.dtype]
    return "float32"


def assign_shards(jobs: list[TensorJob], max_shard_size: int | str) -> list[TensorJob]:
    try:  # the hub's own parser: "2GB", "500MB" (decimal units, as save_pretrained uses)
        size = parse_size_to_int(max_shard_size) if isinstance(max_shard_size, str) else int(max_shard_size)
    except ValueError as e:
        raise SpecError(f"max shard size {max_shard_size!r}: {e}") from None
    nbytes = {j.name: j.nbytes for j in jobs}
    split = split_state_dict_into_shards_factory(
        nbytes, get_storage_size=lambda n: n, filename_pattern="model{suffix}.safetensors", max_shard_size=size)
    return [_with_shard(j, split.tensor_to_filename[j.name]) for j in jobs]


def _with_shard(job: TensorJob, shard: str) -> TensorJob:
    return replace(job, shard=shard)


def _index_of(ctx: PlanContext, ref: str | None) -> int:
    if ref is None or ref in ("base", "union"):  # the union's tokenizer is written by the aligned checkpoint 0
        return 0
    for i, c in enumerate(ctx.checkpoints):
        if c.ref == ref:
            return i
    raise SpecError(f"config_from/tokenizer_from {ref!r} is neither 'base' nor one of the spec's models.")


def _num_layers(ckpt: Checkpoint) -> int:
    cfg = ckpt.config
    if cfg is not None:
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
    found = [schedule.layer_index(n) for n in ckpt.tensors]
    return max((i for i in found if i is not None), default=0) + 1
