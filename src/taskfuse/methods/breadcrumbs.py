"""Model Breadcrumbs: drop both the smallest and the largest (outlier) task-vector entries."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, combine, disjoint_merge_, scaled
from ..ops.masks import MagnitudeCut, band_cuts
from .params import STRICT, PerModelDensity, PerModelFraction, per_model
from .registry import method
from .sliced import SliceInputs, sliced
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


def band_cuts_per_model(x: SliceInputs, density, gamma) -> list[tuple[MagnitudeCut, MagnitudeCut]]:
    d, g = per_model(density, x.count, "density"), per_model(gamma, x.count, "gamma")
    return band_cuts(x.slices, [float(v) for v in d], [float(v) for v in g])


def apply_bands(chunk: torch.Tensor, bands, start: int) -> torch.Tensor:
    """(T, C) chunk keeping, per model, the magnitudes inside its band."""
    # the cuts are nested (outliers ⊆ outer), so the band is the difference of the two trimmed rows
    return torch.stack([outer.apply(row, start) - outliers.apply(row, start) for (outer, outliers), row in
                        zip(bands, chunk)])


@method("breadcrumbs", params=Breadcrumbs, space="delta", paper=PAPER, reference="mergekit breadcrumbs",
        traits=("symmetric",))
@sliced
def breadcrumbs(x: SliceInputs, p: Breadcrumbs):
    """Mask outliers and small entries of each task vector, then λ · Σ_t w_t τ̃_t."""
    bands = band_cuts_per_model(x, p.density, p.gamma)
    return lambda chunk, sl: scaled(combine(apply_bands(chunk, bands, sl.start), x.weights, p.normalize), p.scale)


@method("breadcrumbs_ties", params=BreadcrumbsTies, space="delta", paper=PAPER,
        reference="mergekit breadcrumbs_ties", traits=("symmetric",))
@sliced
def breadcrumbs_ties(x: SliceInputs, p: BreadcrumbsTies):
    """Breadcrumbs masks followed by TIES sign election and disjoint merge."""
    bands = band_cuts_per_model(x, p.density, p.gamma)

    def merge_chunk(chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        trimmed = apply_bands(chunk, bands, sl.start)
        return scaled(disjoint_merge_(trimmed, x.weights, p.sign_election, p.elect_on, p.normalize), p.scale)

    return merge_chunk
