"""One job's arithmetic: build Inputs, call the registered method, return the output tensor."""
from __future__ import annotations

import json
from functools import lru_cache

import torch

from ..errors import TaskfuseError
from ..methods import get_method
from ..methods.inputs import Inputs
from .loading import LoadedJob


@lru_cache(maxsize=4096)
def _params(method: str, frozen: str):
    return get_method(method).make_params(json.loads(frozen))


def float_stack(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """(T, *S) float32 stack filled in place: one converting copy per input instead of convert-then-stack."""
    stack = torch.empty((len(tensors), *tensors[0].shape), dtype=torch.float32, device=device)
    for row, t in zip(stack, tensors):
        row.copy_(t)
    return stack


def compute_job(loaded: LoadedJob, seed: int, device: torch.device) -> torch.Tensor:
    """The merged tensor, cast to the job's output dtype, on the CPU."""
    job = loaded.job
    out_dtype = getattr(torch, job.dtype)
    if job.method == "passthrough":  # a copy: skip the float32 round trip (integer buffers stay exact)
        return loaded.sources[job.params.get("source", 0)].to(out_dtype)
    info = get_method(job.method)
    stack = float_stack(loaded.sources, device)
    base = loaded.base.to(device=device, dtype=torch.float32) if loaded.base is not None else None
    if info.space == "delta":
        stack -= base
    weights = torch.tensor(job.weights, dtype=torch.float32, device=device)
    params = _params(job.method, json.dumps(job.params, sort_keys=True))
    result = info.fn(Inputs(stack, weights, base, job.name, seed), params)
    if info.space == "delta":
        result = base + result
    if not torch.isfinite(result.sum()) and not torch.isfinite(result).all():  # cheap test first
        raise TaskfuseError(f"method {job.method!r} produced NaN/Inf for tensor {job.name!r} from finite inputs; "
                            f"parameters {job.params}. This is a bug: please report it with the spec.")
    return result.to(device="cpu", dtype=out_dtype)
