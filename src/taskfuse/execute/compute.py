"""One job's arithmetic: build Inputs, call the registered method, return the output tensor."""
from __future__ import annotations

import json
import math
from functools import lru_cache

import torch

from ..errors import TaskfuseError
from ..methods import get_method
from ..methods.inputs import Inputs
from ..methods.sliced import ALL_EMITTED, SliceInputs
from ..ops.slices import Runner, Slices, run_in_order
from ..plan.plan import TensorJob
from .buffers import BufferPool
from .loading import LoadedJob


@lru_cache(maxsize=4096)
def _params(method: str, frozen: str):
    return get_method(method).make_params(json.loads(frozen))


def job_arguments(job: TensorJob, device: torch.device | str = "cpu"):
    """The job's validated Params (cached per distinct value set) and its (T,) weights tensor."""
    params = _params(job.method, json.dumps(job.params, sort_keys=True))
    return params, torch.tensor(job.weights, dtype=torch.float32, device=device)


def float_stack(tensors: list[torch.Tensor], device: torch.device, pool: BufferPool,
                minus: torch.Tensor | None = None) -> torch.Tensor:
    """(T, *S) float32 stack, each row converted in place; with `minus`, rows are t − minus (task vectors)."""
    shape = (len(tensors), *tensors[0].shape)
    stack = pool.take(shape, torch.float32) if device.type == "cpu" else torch.empty(shape, device=device)
    for row, t in zip(stack, tensors):
        row.copy_(t)  # a converting copy then an in-place subtract: 3x faster than one mixed-dtype subtract
        if minus is not None:
            row -= minus
    return stack


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def streams(job: TensorJob, device: torch.device) -> bool:
    """Whether the job runs slice by slice from its stored inputs: methods with a sliced form and elementwise
    ones, on the CPU (on a GPU the whole-tensor path is faster and memory is not the constraint)."""
    info = get_method(job.method)
    return device.type == "cpu" and (info.prepare is not None or "chunkable" in info.traits)


def merge_streaming(loaded: LoadedJob, seed: int, out: torch.Tensor, runner: Runner = run_in_order) -> bool:
    """Merge slice by slice into `out`: each slice is converted to float32 (minus the base for delta methods),
    merged, has the base added back and is cast into `out` while it is in cache. No full-size float32 tensor is
    allocated, and `runner` may spread the slices of every pass over threads.

    Returns whether every output slice's sum was finite (checked in cache; False may also be a harmless overflow
    of the sum, which the caller settles with an exact check)."""
    job = loaded.job
    info = get_method(job.method)
    delta = info.space == "delta"
    params, weights = job_arguments(job)
    slices = Slices.of_stored(loaded.sources, loaded.base if delta else None, runner, on_nonfinite=loaded.verify)
    flat_out = out.view(-1)

    def store(result: torch.Tensor, sl: slice, check: bool = True) -> bool:
        """Cast one fresh (C,) result into `out`; whether its sum is finite in the output dtype (which may
        overflow where float32 did not), or True unchecked."""
        if delta:
            result = result.add_(slices.base_of(sl))  # in place: a merge result is fresh per slice
        cast = flat_out[sl]
        cast.copy_(result)
        return not check or bool(torch.isfinite(cast.sum()))

    emitted_nonfinite: list[slice] = []  # appended from worker threads (list.append is atomic)
    # An emitted result with a bound up to this is finite in the output dtype (see Emit: twice the bound, with a
    # factor 2 to spare for rounding), so its check, 7% of a SLERP merge's arithmetic, is skipped.
    safe_bound = min(torch.finfo(torch.float32).max, torch.finfo(out.dtype).max) / 4 \
        if out.dtype.is_floating_point else 0.0

    def emit(result: torch.Tensor, sl: slice, bound: float = math.inf) -> None:
        if not store(result, sl, check=not bound <= safe_bound):  # `not <=`: a NaN bound is checked
            emitted_nonfinite.append(sl)

    if info.prepare is not None:
        merge_chunk = info.prepare(SliceInputs(slices, weights, tuple(job.shape), job.name, seed, emit), params)
        if merge_chunk is ALL_EMITTED:
            return not emitted_nonfinite
    else:  # elementwise: the method itself merges any slice (the conformance kit's chunkable check)
        def merge_chunk(chunk: torch.Tensor, sl: slice) -> torch.Tensor:
            return info.fn(Inputs(chunk, weights, None, job.name, seed), params)

    return all(slices.map(lambda chunk, sl: store(merge_chunk(chunk, sl), sl)))


def merge_into(loaded: LoadedJob, seed: int, device: torch.device, pool: BufferPool, out: torch.Tensor) -> None:
    """Run the job's method and write the merged tensor into `out` (its output dtype, on the CPU)."""
    job = loaded.job
    info = get_method(job.method)
    delta = info.space == "delta"
    base = float_stack([loaded.base], device, pool)[0] if loaded.base is not None else None
    stack = float_stack(loaded.sources, device, pool, minus=base if delta else None)
    statistics = float_stack(loaded.statistics, device, pool) if loaded.statistics else None
    params, weights = job_arguments(job, device)
    result = info.fn(Inputs(stack, weights, base, job.name, seed, statistics), params)
    if delta:
        # in float32 then one converting copy: 2x faster here than adding straight into a bf16 `out`
        result = result + base if _shares_memory(result, stack) else result.add_(base)
    out.copy_(result)
    for scratch in (stack, base, statistics):
        if scratch is not None and not _shares_memory(result, scratch):
            pool.give(scratch)


def _no_model_moved(loaded: LoadedJob) -> bool:
    base = loaded.base
    return (base is not None and get_method(loaded.job.method).space == "delta"
            and all(s.dtype == base.dtype and torch.equal(s, base) for s in loaded.sources))


def compute_job(loaded: LoadedJob, seed: int, device: torch.device, pool: BufferPool,
                runner: Runner = run_in_order, out_address: tuple[int, int] | None = None) -> torch.Tensor:
    """The merged tensor in the job's output dtype, on the CPU, in a pool buffer (placed at `out_address`: see
    BufferPool.take); the inputs go back to the pool."""
    job = loaded.job
    out = pool.take(job.shape, getattr(torch, job.dtype), out_address)
    if job.method == "passthrough":  # a copy: skip the float32 round trip (integer buffers stay exact)
        loaded.verify()
        out.copy_(loaded.sources[job.params.get("source", 0)])
    elif _no_model_moved(loaded):
        # Every delta-space method maps all-zero task vectors to a zero delta (the conformance kit's zeros check),
        # so a tensor no fine-tune changed, such as a frozen embedding table, is the base without the arithmetic.
        loaded.verify()
        out.copy_(loaded.base)
    else:
        if streams(job, device):
            # checks its inputs in its first pass over the slices and its output slice by slice
            finite = merge_streaming(loaded, seed, out, runner)
        else:
            loaded.verify()
            merge_into(loaded, seed, device, pool, out)
            finite = bool(torch.isfinite(out.sum()))  # a cheap test first
        if not finite and not torch.isfinite(out).all():
            raise TaskfuseError(f"method {job.method!r} produced NaN/Inf in {job.dtype} for tensor {job.name!r} "
                                f"from finite inputs (parameters {job.params}). If the values overflow {job.dtype}, "
                                "choose a wider output dtype; otherwise please report this with the spec.")
    for t in [*loaded.sources, loaded.base, *loaded.statistics]:
        pool.give(t)
    return out
