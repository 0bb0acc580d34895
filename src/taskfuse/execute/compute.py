"""One job's arithmetic: build Inputs, call the registered method, return the output tensor."""
from __future__ import annotations

import json
from functools import lru_cache

import torch

from ..errors import TaskfuseError
from ..methods import get_method
from ..methods.inputs import Inputs
from .buffers import BufferPool
from .loading import LoadedJob


@lru_cache(maxsize=4096)
def _params(method: str, frozen: str):
    return get_method(method).make_params(json.loads(frozen))


def float_stack(tensors: list[torch.Tensor], device: torch.device, pool: BufferPool) -> torch.Tensor:
    """(T, *S) float32 stack filled in place: one converting copy per input instead of convert-then-stack."""
    shape = (len(tensors), *tensors[0].shape)
    stack = pool.take(shape, torch.float32) if device.type == "cpu" else torch.empty(shape, device=device)
    for row, t in zip(stack, tensors):
        row.copy_(t)
    return stack


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def merged_float(loaded: LoadedJob, seed: int, device: torch.device, pool: BufferPool) -> torch.Tensor:
    """The job's merged tensor in float32 on `device`; recycles the stack when the result does not alias it."""
    job = loaded.job
    info = get_method(job.method)
    stack = float_stack(loaded.sources, device, pool)
    base = float_stack([loaded.base], device, pool)[0] if loaded.base is not None else None
    if info.space == "delta":
        stack -= base
    weights = torch.tensor(job.weights, dtype=torch.float32, device=device)
    params = _params(job.method, json.dumps(job.params, sort_keys=True))
    result = info.fn(Inputs(stack, weights, base, job.name, seed), params)
    if info.space == "delta":
        result = result + base if _shares_memory(result, stack) else result.add_(base)
    for scratch in (stack, base):
        if scratch is not None and not _shares_memory(result, scratch):
            pool.give(scratch)
    return result


def compute_job(loaded: LoadedJob, seed: int, device: torch.device, pool: BufferPool) -> torch.Tensor:
    """The merged tensor in the job's output dtype, on the CPU, in a pool buffer; the inputs go back to the pool."""
    job = loaded.job
    out = pool.take(job.shape, getattr(torch, job.dtype))
    if job.method == "passthrough":  # a copy: skip the float32 round trip (integer buffers stay exact)
        out.copy_(loaded.sources[job.params.get("source", 0)])
    else:
        result = merged_float(loaded, seed, device, pool)
        if not torch.isfinite(result.sum()) and not torch.isfinite(result).all():  # cheap test first
            raise TaskfuseError(f"method {job.method!r} produced NaN/Inf for tensor {job.name!r} from finite "
                                f"inputs; parameters {job.params}. This is a bug: please report it with the spec.")
        out.copy_(result)
    for t in [*loaded.sources, loaded.base]:
        pool.give(t)
    return out
