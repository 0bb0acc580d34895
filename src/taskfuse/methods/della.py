"""DELLA-Merging: magnitude-ranked random drop (MagPrune), elect, fuse."""
from __future__ import annotations

import torch
from pydantic import model_validator
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, combine, disjoint_merge_, scaled
from ..ops.dropout import Rescale, drop_with_probability
from .inputs import Inputs
from .params import STRICT, PerModelDensity, per_model
from .registry import method
from .ties import ElectOn

PAPER = "Deep et al. 2024, DELLA-Merging, arXiv:2406.11617"


@dataclass(config=STRICT)
class DellaLinear:
    density: PerModelDensity = 0.5  # mean keep probability
    epsilon: float = 0.1  # keep probabilities span density ± epsilon by magnitude rank
    rescale: Rescale = "inverse"  # survivors / their own keep probability (paper) or "l1" (mergekit)
    scale: float = 1.0  # λ
    normalize: Normalize = "none"

    @model_validator(mode="after")
    def _window(self):
        lows = self.density if isinstance(self.density, tuple) else (self.density,)
        for d in lows:
            if d < 1 and not (0 < d - self.epsilon and d + self.epsilon <= 1):
                raise ValueError(f"density ± epsilon must lie in (0, 1]; got density={d}, epsilon={self.epsilon}")
        return self


@dataclass(config=STRICT)
class Della(DellaLinear):
    sign_election: SignElection = "mass"
    elect_on: ElectOn = "raw"
    normalize: Normalize = "count"


def keep_probabilities(t: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """MagPrune: per row, keep probability rises linearly with |τ| rank from density-ε to density+ε (Eq. 3)."""
    rows = t.reshape(1, -1) if t.dim() < 2 else t.reshape(t.shape[0], -1)
    n = rows.shape[1]
    ranks = torch.argsort(torch.argsort(rows.abs(), dim=1, stable=True), dim=1).to(t.dtype)
    spread = ranks / max(n - 1, 1)  # 0 for the smallest magnitude, 1 for the largest
    return (density - epsilon + 2 * epsilon * spread).reshape(t.shape)


def magprune_stack(x: Inputs, p: DellaLinear) -> torch.Tensor:
    d = per_model(p.density, x.count, "density")
    g = x.generator()
    return torch.stack([
        t if d[i] >= 1 else drop_with_probability(t, keep_probabilities(t, float(d[i]), p.epsilon), p.rescale, g)
        for i, t in enumerate(x.stack)
    ])


@method("della", params=Della, space="delta", paper=PAPER, reference="mergekit della", traits=("stochastic",))
def della(x: Inputs, p: Della):
    """MagPrune each task vector, elect signs, fuse the agreeing entries, scale by λ."""
    pruned = magprune_stack(x, p)
    return scaled(disjoint_merge_(pruned, x.weights, p.sign_election, p.elect_on, p.normalize), p.scale)


@method("della_linear", params=DellaLinear, space="delta", paper=PAPER, reference="mergekit della_linear",
        traits=("stochastic",))
def della_linear(x: Inputs, p: DellaLinear):
    """MagPrune each task vector, then λ · Σ_t w_t τ̃_t."""
    return scaled(combine(magprune_stack(x, p), x.weights, p.normalize), p.scale)
