"""Model Breadcrumbs: drop both the smallest and the largest (outlier) task-vector entries."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, combine, disjoint_merge, scaled
from ..ops.masks import band_magnitude_mask
from .inputs import Inputs
from .params import STRICT, PerModelDensity, PerModelFraction, per_model
from .registry import method
from .ties import ElectOn

PAPER = "Davari & Belilovsky 2024, Model Breadcrumbs, ECCV, arXiv:2312.06795"


@dataclass(config=STRICT)
class Breadcrumbs:
    density: PerModelDensity = 0.9  # fraction kept
    gamma: PerModelFraction = 0.01  # fraction of largest magnitudes removed as outliers
    scale: float = 1.0
    normalize: Normalize = "none"


@dataclass(config=STRICT)
class BreadcrumbsTies:
    density: PerModelDensity = 0.9
    gamma: PerModelFraction = 0.01
    scale: float = 1.0
    sign_election: SignElection = "mass"
    elect_on: ElectOn = "raw"
    normalize: Normalize = "count"


def crumb_stack(x: Inputs, density, gamma) -> torch.Tensor:
    d, g = per_model(density, x.count, "density"), per_model(gamma, x.count, "gamma")
    return torch.stack([t * band_magnitude_mask(t, float(d[i]), float(g[i])) for i, t in enumerate(x.stack)])


@method("breadcrumbs", params=Breadcrumbs, space="delta", paper=PAPER, reference="mergekit breadcrumbs",
        traits=("symmetric",))
def breadcrumbs(x: Inputs, p: Breadcrumbs):
    """Mask outliers and small entries of each task vector, then λ · Σ_t w_t τ̃_t."""
    return scaled(combine(crumb_stack(x, p.density, p.gamma), x.weights, None, p.normalize), p.scale)


@method("breadcrumbs_ties", params=BreadcrumbsTies, space="delta", paper=PAPER,
        reference="mergekit breadcrumbs_ties", traits=("symmetric",))
def breadcrumbs_ties(x: Inputs, p: BreadcrumbsTies):
    """Breadcrumbs masks followed by TIES sign election and disjoint merge."""
    crumbs = crumb_stack(x, p.density, p.gamma)
    return scaled(disjoint_merge(crumbs, x.weights, p.sign_election, p.elect_on, p.normalize), p.scale)
