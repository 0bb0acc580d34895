"""Consensus merging with TALL masks: keep only weights that at least k tasks rely on."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from ..ops.consensus import combine, scaled
from .inputs import Inputs
from .params import STRICT
from .registry import method


@dataclass(config=STRICT)
class Consensus:
    k: Annotated[int, Field(ge=1)] = 2  # minimum number of tasks whose TALL mask keeps an entry
    tall_lambda: Annotated[float, Field(gt=0)] = 0.4  # λ_t in the TALL mask criterion
    scale: float = 1.0  # λ on the merged task vector


@method(
    "consensus",
    params=Consensus,
    space="delta",
    paper="Wang et al. 2024, Localizing Task Information for Improved Model Merging and Compression, ICML, "
    "arXiv:2405.07813",
    reference="github.com/nik-dim/tall_masks",
    traits=("symmetric", "chunkable"),
)
def consensus(x: Inputs, p: Consensus):
    """TALL masks m_t = |τ_t| ≥ λ|τ_MTL − τ_t| (Eq. 5); keep entries with Σ_t m_t ≥ k; task arithmetic on them."""
    multi_task = x.stack.sum(0)  # τ_MTL, the plain sum as in the paper
    tall = x.stack.abs() >= p.tall_lambda * (multi_task.unsqueeze(0) - x.stack).abs()
    agree = tall.sum(0) >= p.k
    return scaled(combine(x.stack, x.weights, "none") * agree, p.scale)
