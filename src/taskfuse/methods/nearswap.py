"""NearSwap: the base pulled toward one other model where the two are already close."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from .inputs import Inputs
from .params import STRICT
from .registry import method

DIFFERENCE_FLOOR = 1e-6  # |a − b| is taken as at least this when t is divided by it


@dataclass(config=STRICT)
class NearSwap:
    t: float = 0.001  # how far each entry may move toward the other model: differences up to t are taken whole


@method(
    "nearswap",
    params=NearSwap,
    space="delta",
    paper="(no paper) NearSwap, from the alchemonaut/QuartetAnemoi-70B-t0.0001 model card; mergekit's nearswap",
    reference="mergekit 0.1.5's nearswap (its docs/merge_methods.md; tests/fixtures/mergekit)",
    traits=("chunkable",),
    min_models=1,
    max_models=1,
)
def nearswap(x: Inputs, p: NearSwap):
    """base + w·τ with w = clamp(t / |τ|, 0, 1) per entry: each entry of the task vector is kept up to ±t.

    mergekit writes it as w·b + (1 − w)·a with w = clamp(t / max(|a − b|, 1e-6), 0, 1), a the base and b the other
    model; with τ = b − a that is the clipped task vector above (the weights of the models are not used)."""
    tau = x.stack[0]
    return tau * (p.t / tau.abs().clamp(min=DIFFERENCE_FLOOR)).clamp(0, 1)
