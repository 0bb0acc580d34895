"""A differentiable view of a merge: θ(Λ) = θ₀ + Σ_t Λ_t ⊙ τ_t, evaluated on the base module with functional_call.

This is the core that learned composition (AdaMerging, aTLAS) trains. The base's parameters and the task vectors
are held once each, never as T model copies, and only the coefficients Λ require gradients. How many coefficients
there are is the parameterization:

- "task": one scalar per task (task-wise AdaMerging), Λ of shape (T,);
- "layer": one scalar per task and parameter tensor (layer-wise AdaMerging = aTLAS's "blockwise"), (T, P);
- "partition": aTLAS×K: each tensor's entries split into K random partitions (seeded, fixed), one scalar per task,
  tensor and partition, (T, P, K). With K = 1 it is "layer".

Parameters whose task vectors are all zero (frozen while fine-tuning, like the benchmark's vocabulary table) are
left at θ₀ and get no coefficient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..methods.inputs import stable_seed

Kind = Literal["task", "layer", "partition"]


@dataclass(frozen=True)
class Parameterization:
    kind: Kind = "layer"
    partitions: int = 1  # K, for kind "partition"
    seed: int = 0  # fixes the random partitions

    def __post_init__(self):
        if self.kind not in ("task", "layer", "partition"):
            raise ValueError(f"unknown parameterization {self.kind!r}: use task, layer or partition")
        if not 1 <= self.partitions <= 255 or (self.kind != "partition" and self.partitions != 1):
            raise ValueError("partitions must be 1..255, and above 1 only with kind='partition'")


class MergeView(nn.Module):
    """`view(**inputs)` runs the base module with θ(Λ); `view.coefficients` is the only trainable tensor."""

    def __init__(self, base: nn.Module, task_vectors: list[dict[str, Tensor]],
                 parameterization: Parameterization = Parameterization(), init: float = 0.3):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.parameterization = parameterization
        self.tasks = len(task_vectors)
        params = dict(base.named_parameters())
        self.names = [n for n in params if any(bool(tv[n].any()) for tv in task_vectors if n in tv)]
        missing = sorted({n for n in self.names for tv in task_vectors if n not in tv})
        if missing:
            raise ValueError(f"task vectors lack {missing[:5]}: every task vector needs every moved parameter")
        for i, n in enumerate(self.names):  # buffers, so .to(device / dtype) moves them with the coefficients
            self.register_buffer(f"delta_{i}", torch.stack([tv[n].to(params[n].dtype) for tv in task_vectors]),
                                 persistent=False)  # (T, *S)
            if parameterization.kind == "partition":  # uint8: a byte per entry (an int64 index would be 8)
                self.register_buffer(f"partition_{i}", self._partition_of(n, params[n].shape), persistent=False)
        shape = {"task": (self.tasks,), "layer": (self.tasks, len(self.names)),
                 "partition": (self.tasks, len(self.names), parameterization.partitions)}[parameterization.kind]
        self.coefficients = nn.Parameter(torch.full(shape, float(init)))

    def _partition_of(self, name: str, shape: torch.Size) -> Tensor:
        """(*S) partition index of every entry, drawn from (seed, name) so it never depends on order."""
        g = torch.Generator().manual_seed(stable_seed(self.parameterization.seed, f"partition:{name}"))
        return torch.randint(self.parameterization.partitions, shape, generator=g, dtype=torch.uint8)

    def partition(self, index: int) -> Tensor:
        """(*S) int64 partition of parameter `index` (kind "partition" only)."""
        return getattr(self, f"partition_{index}").long()

    def coefficient_of(self, index: int) -> Tensor:
        """The coefficients of parameter `index`: (T,), or (T, *S) entry by entry for partitions."""
        kind = self.parameterization.kind
        if kind == "task":
            return self.coefficients
        if kind == "layer":
            return self.coefficients[:, index]
        return self.coefficients[:, index][:, self.partition(index)]  # (T, K) gathered to (T, *S)

    def merged_parameters(self) -> dict[str, Tensor]:
        """θ(Λ) for every parameter with a coefficient (the rest stay the base's own)."""
        merged = {}
        params = dict(self.base.named_parameters())  # θ₀ is the base's own storage, never a copy
        for i, name in enumerate(self.names):
            theta0, deltas, lam = params[name].detach(), getattr(self, f"delta_{i}"), self.coefficient_of(i)
            if lam.dim() == 1:  # Σ_t λ_t τ_t as one (T) · (T, N) product: no (T, *S) temporary
                merged[name] = theta0 + torch.tensordot(lam, deltas, dims=1)
            else:
                merged[name] = theta0 + (lam * deltas).sum(0)
        return merged

    def forward(self, *args, **kwargs):
        return functional_call(self.base, self.merged_parameters(), args, kwargs, strict=False)

    def tensor_weights(self) -> dict[str, list[float]]:
        """Per parameter, the per-task weights of a task-wise or layer-wise view: what a spec records to replay it."""
        if self.parameterization.kind == "partition":
            raise ValueError("partition coefficients vary within a tensor; they are not per-tensor weights")
        return {n: self.coefficient_of(i).detach().double().tolist() for i, n in enumerate(self.names)}


class BoundMerge:
    """The base module called with given parameters, e.g. one θ(Λ) shared by several batches (a closure, not a
    module: it owns no parameters)."""

    def __init__(self, base: nn.Module, parameters: dict[str, Tensor]):
        self.base, self.parameters = base, parameters

    def __call__(self, *args, **kwargs):
        return functional_call(self.base, self.parameters, args, kwargs, strict=False)
