"""DARE: drop task-vector entries at random and rescale, then combine linearly or TIES-style."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, combine, disjoint_merge, scaled
from ..ops.chunks import map_chunks
from ..ops.dropout import Rescale, draw_keep_mask, l1_rescale_factors
from .inputs import Inputs
from .params import STRICT, PerModelDensity, per_model
from .registry import method
from .ties import ElectOn

PAPER = "Yu et al. 2024, Language Models are Super Mario (DARE), ICML, arXiv:2311.03099"


@dataclass(config=STRICT)
class Dare:
    density: PerModelDensity = 0.5  # keep probability p; the paper's drop rate is 1 - p
    rescale: Rescale = "inverse"  # survivors / p (paper, PEFT) or "l1" norm matching (mergekit)
    scale: float = 1.0
    normalize: Normalize = "none"


@dataclass(config=STRICT)
class DareTies:
    density: PerModelDensity = 0.5
    rescale: Rescale = "inverse"
    scale: float = 1.0
    sign_election: SignElection = "mass"
    elect_on: ElectOn = "raw"
    normalize: Normalize = "count"


class Dropper:
    """DARE's random drop for one tensor: per model a generator stream, a density and a survivor scale."""

    def __init__(self, x: Inputs, density, rescale: Rescale):
        self.densities = per_model(density, x.count, "density")
        self.gens = [x.generator(i) for i in range(x.count)]
        if rescale == "l1":
            self.factors = l1_rescale_factors(x.stack.reshape(x.count, -1), self.densities, self.gens)
        else:
            self.factors = [1.0 / float(d) if rescale == "inverse" else 1.0 for d in self.densities]

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        """(T, C) chunk with dropped entries zeroed and survivors rescaled; chunks must come in order."""
        rows = []
        for i, row in enumerate(chunk):
            d = float(self.densities[i])
            rows.append(row if d >= 1 else row * draw_keep_mask(row, d, self.gens[i]) * self.factors[i])
        return torch.stack(rows)


@method(
    "dare_linear",
    params=Dare,
    space="delta",
    paper=PAPER,
    reference="peft.utils.merge_utils.dare_linear; mergekit dare_linear",
    traits=("stochastic",),
)
def dare_linear(x: Inputs, p: Dare):
    """Drop-and-rescale each task vector, then λ · Σ_t w_t τ̃_t."""
    drop = Dropper(x, p.density, p.rescale)
    merged = map_chunks(lambda c, _: combine(drop(c), x.weights, None, p.normalize), x.stack.reshape(x.count, -1))
    return scaled(merged.reshape(x.stack.shape[1:]), p.scale)


@method(
    "dare_ties",
    params=DareTies,
    space="delta",
    paper=PAPER,
    reference="peft.utils.merge_utils.dare_ties; mergekit dare_ties",
    traits=("stochastic",),
)
def dare_ties(x: Inputs, p: DareTies):
    """Drop-and-rescale each task vector, then TIES sign election and disjoint merge."""
    drop = Dropper(x, p.density, p.rescale)

    def merge_chunk(chunk: torch.Tensor, _: slice) -> torch.Tensor:
        return disjoint_merge(drop(chunk), x.weights, p.sign_election, p.elect_on, p.normalize)

    merged = map_chunks(merge_chunk, x.stack.reshape(x.count, -1))
    return scaled(merged.reshape(x.stack.shape[1:]), p.scale)
