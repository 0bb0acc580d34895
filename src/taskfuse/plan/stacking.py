"""Layer stacking ("frankenmerging"): output layers copied from slices of the models' layer stacks."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import SpecError, collect
from ..io.checkpoint import TensorMeta
from .plan import Source, TensorJob
from .schedule import LAYER, layer_index

if TYPE_CHECKING:
    from .planner import PlanContext


def renumber(name: str, new_index: int) -> str:
    """`name` with its layer number replaced, e.g. model.layers.7.mlp -> model.layers.2.mlp."""
    m = LAYER.search(name)
    return name[: m.start(1)] + str(new_index) + name[m.end(1):]


def plan_slices(ctx: "PlanContext", dtype: str) -> list[TensorJob]:
    """Non-layer tensors from checkpoint 0; then each slice's layers, renumbered consecutively."""
    if ctx.spec.method != "passthrough":
        raise SpecError(f"slices (layer stacking) need method 'passthrough', not {ctx.spec.method!r}")
    by_ref = {c.ref: i for i, c in enumerate(ctx.checkpoints)}
    jobs = [_copy(ctx, 0, n, n, dtype) for n in ctx.reference.tensors if layer_index(n) is None]
    errors, out_layer = [], 0
    for k, sl in enumerate(ctx.spec.slices or []):
        ckpt = by_ref.get(sl.model)
        start, end = sl.layers
        if ckpt is None or not 0 <= start < end:
            errors.append(f"slices[{k}]: model {sl.model!r} not among the models, or empty range {sl.layers}")
            continue
        for layer in range(start, end):
            names = [n for n in ctx.checkpoints[ckpt].tensors if layer_index(n) == layer]
            if not names:
                errors.append(f"slices[{k}]: {ctx.model_label(ckpt)} has no layer {layer}")
            jobs += [_copy(ctx, ckpt, n, renumber(n, out_layer), dtype) for n in names]
            out_layer += 1
    collect(errors, SpecError, "invalid slices")
    return jobs


def copy_job(meta: TensorMeta, source: Source, out_name: str, dtype: str, rule: str) -> TensorJob:
    """A job copying one checkpoint's tensor: floating tensors take the output dtype, integer ones keep theirs."""
    out_dtype = dtype if meta.dtype.is_floating_point else str(meta.dtype).removeprefix("torch.")
    return TensorJob(name=out_name, method="passthrough", params={"source": 0}, sources=(source,), weights=(1.0,),
                     base=None, shape=meta.shape, dtype=out_dtype, rule=rule)


def _copy(ctx: "PlanContext", ckpt: int, name: str, out_name: str, dtype: str) -> TensorJob:
    return copy_job(ctx.checkpoints[ckpt].tensors[name], Source(ckpt, name), out_name, dtype, "stack")
