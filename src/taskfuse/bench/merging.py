"""Merging the zoo's experts through the public API: the same planner and executor users run."""
from __future__ import annotations

from pathlib import Path

from .. import api
from ..methods import get_method
from ..zoo.build import Zoo


def zoo_spec(zoo: Zoo, method: str, params: dict, seed: int = 0) -> dict:
    """A taskfuse spec merging every expert's encoder; delta-space methods take the base encoder as base, and
weight-space ones take config and tokenizer from the first expert (saved from the same base)."""
    spec = {"method": method, "models": [{"path": str(e.model_dir)} for e in zoo.experts.values()],
            "params": dict(params), "dtype": "float32", "seed": seed,
            # transformers no longer saves the position_ids buffer that the base file still carries
            "tensor_rules": {"missing": "copy_base"}}
    if get_method(method).space == "delta":
        spec.update(base=str(zoo.base_dir), config_from="base", tokenizer_from="base")
    return spec


def merge_zoo(zoo: Zoo, method: str, params: dict, out: Path, seed: int = 0) -> tuple[dict, float]:
    """Write the merged encoder to `out`; returns the spec and the merge's wall time."""
    spec = zoo_spec(zoo, method, params, seed)
    result = api.merge(spec, out, threads=None)
    return spec, result.seconds
