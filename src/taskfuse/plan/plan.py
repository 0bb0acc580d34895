"""The Plan: every output tensor's sources, method, resolved parameters, dtype and shard. JSON-serialisable."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Source:
    checkpoint: int  # index into Plan.checkpoints
    tensor: str


@dataclass(frozen=True)
class TensorJob:
    name: str  # output tensor name
    method: str
    params: dict[str, Any]  # fully resolved, defaults included
    sources: tuple[Source, ...]  # the stack, in model order
    weights: tuple[float, ...]
    base: Source | None  # subtracted before / added after a delta-space method
    shape: tuple[int, ...]
    dtype: str  # output dtype
    shard: str = ""
    rule: str = "merge"  # why this job exists: merge, copy_base (integer buffer / missing rule), stack (slices)
    statistics: tuple[Source, ...] = ()  # per source, its model's statistics of this tensor (methods that read them)

    @property
    def inputs(self) -> tuple[Source, ...]:
        """Every tensor the job reads: the sources, then the base, then the statistics."""
        return self.sources + ((self.base,) if self.base else ()) + self.statistics

    @property
    def nbytes(self) -> int:
        """Size of the output tensor in bytes."""
        return math.prod(self.shape) * getattr(torch, self.dtype).itemsize


@dataclass(frozen=True)
class Plan:
    checkpoints: tuple[str, ...]  # refs; the base (if any) is index 0
    has_base: bool
    jobs: tuple[TensorJob, ...]
    seed: int
    dtype: str
    config_from: int | None
    tokenizer_from: int | None
    config_updates: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    # checkpoints from this index on are the models' statistics files (read by methods that merge with data)
    statistics_from: int | None = None

    @property
    def shards(self) -> list[str]:
        return list(dict.fromkeys(j.shard for j in self.jobs))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        def job(j: dict) -> TensorJob:
            return TensorJob(**{**j, "sources": tuple(Source(**s) for s in j["sources"]),
                                "base": Source(**j["base"]) if j["base"] else None,
                                "statistics": tuple(Source(**s) for s in j.get("statistics", ())),
                                "weights": tuple(j["weights"]), "shape": tuple(j["shape"])})

        return cls(**{**d, "checkpoints": tuple(d["checkpoints"]), "jobs": tuple(job(j) for j in d["jobs"])})

    def summary(self) -> dict[str, Any]:
        methods: dict[str, int] = {}
        for j in self.jobs:
            methods[j.method] = methods.get(j.method, 0) + 1
        return {"tensors": len(self.jobs), "shards": len(self.shards), "methods": methods,
                "checkpoints": list(self.checkpoints), "dtype": self.dtype}
