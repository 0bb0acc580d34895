"""Task arithmetic with one coefficient per model and random partition of a tensor: aTLAS×K's merge, replayable.

aTLAS×K (Zhang et al. 2024) splits each parameter tensor's entries into K random partitions and learns one
scale per task vector and partition. The learning happens in programs/merge_view.py; this method is how the
streaming engine writes what it learned: θ = θ₀ + Σ_t w_t · (λ_t[partition] ⊙ τ_t), with each tensor's (T, K)
coefficients given by a per-tensor override. The partitions are drawn exactly as the view draws them, from
(partition_seed, the tensor's name), so they never depend on the order tensors are merged in.
"""
from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from ..errors import SpecError
from .inputs import Inputs, stable_seed
from .params import STRICT
from .registry import method


def partition_index(seed: int, name: str, shape: torch.Size | tuple[int, ...], partitions: int) -> torch.Tensor:
    """(*shape) uint8 partition of every entry of tensor `name`: the same draw as MergeView's "partition" kind
    (a byte per entry; a test holds the two to each other)."""
    g = torch.Generator().manual_seed(stable_seed(seed, f"partition:{name}"))
    return torch.randint(partitions, tuple(shape), generator=g, dtype=torch.uint8)


@dataclass(config=STRICT)
class PartitionedTaskArithmetic:
    partitions: Annotated[int, Field(ge=1, le=255)] = 1  # K, as aTLAS×K's view learned it
    partition_seed: int = 0  # the view's Parameterization.seed
    # per tensor (an override's params): model index → its K scales, one per partition; None: 1 everywhere (task
    # arithmetic). A mapping, not a list of rows: a list-valued parameter is a per-layer schedule in a spec.
    coefficients: dict[int, tuple[float, ...]] | None = None


@method(
    "partitioned_task_arithmetic",
    params=PartitionedTaskArithmetic,
    space="delta",
    paper="Zhang et al. 2024, Knowledge Composition using Task Vectors with Learned Anisotropic Scaling (aTLAS×K), "
          "NeurIPS, arXiv:2407.02880",
    reference="the learning it replays: taskfuse.programs.merge_view, Parameterization(\"partition\", K)",
)
def partitioned_task_arithmetic(x: Inputs, p: PartitionedTaskArithmetic):
    """Σ_t w_t · λ_t[k(i)] · τ_t[i], with k(i) entry i's seeded random partition (aTLAS×K's learned merge)."""
    if p.coefficients is None:
        return torch.tensordot(x.weights, x.stack, dims=1)
    rows = [p.coefficients.get(t) for t in range(x.count)]
    if set(p.coefficients) != set(range(x.count)) or any(len(r) != p.partitions for r in rows):
        shape = {t: len(r) for t, r in sorted(p.coefficients.items())}
        raise SpecError(f"partitioned_task_arithmetic at tensor {x.key!r}: coefficients give {shape} values per "
                        f"model index, need models 0..{x.count - 1} with {p.partitions} each (one per partition). "
                        "Fix: give this tensor's override `coefficients: {index: [K values]}` for every model.")
    lam = torch.tensor(rows, dtype=torch.float32, device=x.stack.device)
    lam = lam * x.weights[:, None]
    part = partition_index(p.partition_seed, x.key, x.stack.shape[1:], p.partitions).to(x.stack.device).long()
    out = torch.zeros_like(x.stack[0])
    for row, scales in zip(x.stack, lam):  # one (*S) temporary per model, never a (T, *S) one
        out.addcmul_(scales[part], row)
    return out
