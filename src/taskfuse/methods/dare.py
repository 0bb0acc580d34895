"""DARE: drop task-vector entries at random and rescale, then combine linearly or TIES-style."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, combine, disjoint_merge, scaled
from ..ops.dropout import Rescale, drop_with_probability
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


def drop_stack(x: Inputs, density, rescale: Rescale) -> torch.Tensor:
    """(T, *S) randomly sparsified task vectors; one Bernoulli draw per model, in model order."""
    d = per_model(density, x.count, "density")
    g = x.generator()
    return torch.stack(
        [t if d[i] >= 1 else drop_with_probability(t, d[i], rescale, g) for i, t in enumerate(x.stack)]
    )


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
    return scaled(combine(drop_stack(x, p.density, p.rescale), x.weights, None, p.normalize), p.scale)


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
    dropped = drop_stack(x, p.density, p.rescale)
    return scaled(disjoint_merge(dropped, x.weights, p.sign_election, p.elect_on, p.normalize), p.scale)
