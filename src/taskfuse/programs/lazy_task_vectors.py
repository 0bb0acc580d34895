"""Task vectors computed one tensor at a time, when a MergeView asks for them, from the models' files.

A MergeView keeps each parameter's T task vectors as one (T, *S) stack. Fed with dicts of whole task vectors, the
stacks were built while every vector was held a second time in those dicts, zero vectors of the tensors no model
moved included (the benchmark's frozen vocabulary table: 46 MiB per expert), and AdaMerging++'s TIES pre-processing
made a third copy: building the view, not learning, set the peak (docs/learned.md, "Memory while learning"). These
mappings hold no tensor: `vector[name]` reads that tensor of the model (Checkpoint.read, one tensor) and subtracts
θ₀'s, so building the view holds the stacks, θ₀ and one tensor per model at a time. The values are the ones the
dicts held (the same float32 subtraction, the same TIES function per tensor), so the view is the same to the bit
(tests/bench/test_lazy_task_vectors.py).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from torch import Tensor

from ..io.checkpoint import Checkpoint
from .sparsify import ties_vectors


class FileTaskVector(Mapping):
    """θ_t − θ₀ of the model in `folder`, for every floating-point tensor of θ₀ the model also holds."""

    def __init__(self, folder: str | Path, theta0: dict[str, Tensor]):
        self.model = Checkpoint.open(str(folder))
        self.theta0 = theta0
        self._names = [n for n in theta0 if n in self.model.tensors and theta0[n].is_floating_point()]
        self._known = set(self._names)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._known:
            raise KeyError(name)
        return self.model.read(name) - self.theta0[name]

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _TiesTrimmedTensor:
    """TIES pre-processing of one tensor across all T vectors, kept for the tensor asked for last: the view asks for
    one tensor of every vector in turn, so each tensor is trimmed once per pass over the names."""

    def __init__(self, vectors: list[Mapping], density: float):
        self.vectors, self.density = vectors, density
        self._name: str | None = None
        self._rows: list[Tensor] = []

    def row(self, name: str, t: int) -> Tensor:
        if name != self._name:
            self._rows = []  # drop the previous tensor's before computing this one's
            raw = [v[name] for v in self.vectors]
            if any(bool(r.any()) for r in raw):
                trimmed = ties_vectors([{name: r} for r in raw], self.density)
                raw = [vector[name] for vector in trimmed]
            # else no model moved it (the frozen vocabulary table): TIES of zeros is those zeros, and computing it
            # would hold several (T, *S) temporaries of the largest tensor for nothing
            self._name, self._rows = name, raw
        return self._rows[t]


class TiesTrimmedVector(Mapping):
    """Vector `t` of `programs.sparsify.ties_vectors(vectors, density)`, one tensor at a time."""

    def __init__(self, shared: _TiesTrimmedTensor, t: int):
        self.shared, self.t = shared, t

    def __getitem__(self, name: str) -> Tensor:
        return self.shared.row(name, self.t)

    def __contains__(self, name: object) -> bool:
        return name in self.shared.vectors[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self.shared.vectors[0])

    def __len__(self) -> int:
        return len(self.shared.vectors[0])


def ties_trimmed(vectors: list[Mapping], density: float) -> list[Mapping]:
    """`ties_vectors(vectors, density)` computed on demand, tensor by tensor."""
    shared = _TiesTrimmedTensor(vectors, density)
    return [TiesTrimmedVector(shared, t) for t in range(len(vectors))]
