"""DARE: drop task-vector entries at random and rescale, then combine linearly or TIES-style."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.consensus import Normalize, SignElection, combine, disjoint_merge, scaled
from ..ops.chunks import chunk_slices, map_slices
from ..ops.dropout import Rescale, draw_keep_mask
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
    """DARE's random drop for one tensor: per model a generator stream, a density and a survivor scale.

    With rescale="l1" the scale depends on every survivor of the tensor, so the first pass keeps the dropped
    vectors ((T, N), like the stack itself) and the merge reads them back instead of drawing twice.
    """

    def __init__(self, x: Inputs, density, rescale: Rescale):
        self.densities = [float(d) for d in per_model(density, x.count, "density")]
        self.gens = [x.generator(i) for i in range(x.count)]
        self.factors = [1.0 / d if rescale == "inverse" else 1.0 for d in self.densities]
        self.kept: torch.Tensor | None = None
        if rescale == "l1":
            self.kept, self.factors = self._drop_and_measure(x.stack.reshape(x.count, -1))

    def _drop_and_measure(self, flat: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """All dropped vectors, and per model ‖τ‖₁ / ‖τ ⊙ mask‖₁ (mergekit's rescale; 1 when either is ~0),
        accumulated slice by slice while the slice is in cache."""
        kept = torch.empty_like(flat)
        before = torch.zeros(flat.shape[0], dtype=torch.float64)
        after = torch.zeros(flat.shape[0], dtype=torch.float64)
        for sl in chunk_slices(flat.shape[1]):
            kept[:, sl] = self._drop(flat[:, sl])
            before += flat[:, sl].abs().sum(1)  # float32 per slice: a float64-accumulating sum measured slower
            after += kept[:, sl].abs().sum(1)
        return kept, [b / a if b > 1e-12 and a > 1e-12 else 1.0 for b, a in zip(before.tolist(), after.tolist())]

    def _drop(self, chunk: torch.Tensor) -> torch.Tensor:
        return torch.stack([row if d >= 1 else row * draw_keep_mask(row, d, g)
                            for row, d, g in zip(chunk, self.densities, self.gens)])

    def __call__(self, chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        """(T, C) chunk with dropped entries zeroed and survivors rescaled; chunks must come in order."""
        dropped = self._drop(chunk) if self.kept is None else self.kept[:, sl]
        return dropped * torch.tensor(self.factors, dtype=chunk.dtype, device=chunk.device)[:, None]


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
    return scaled(map_slices(lambda c, sl: combine(drop(c, sl), x.weights, p.normalize), x.stack), p.scale)


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

    def merge_chunk(chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        return disjoint_merge(drop(chunk, sl), x.weights, p.sign_election, p.elect_on, p.normalize)

    return scaled(map_slices(merge_chunk, x.stack), p.scale)
