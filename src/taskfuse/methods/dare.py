"""DARE: drop task-vector entries at random and rescale, then combine linearly or TIES-style."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass

from ..ops.bernoulli import drop_
from ..ops.consensus import Normalize, SignElection, combine, disjoint_merge_, scaled
from ..ops.dropout import Rescale
from .inputs import RandomField
from .params import STRICT, PerModelDensity, per_model
from .registry import method
from .sliced import SliceInputs, sliced
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
    """DARE's random drop for one tensor: per model a random stream, a density and a survivor scale.

    Masks are addressed by flat position (RandomField), so a slice is dropped the same way in every pass and on
    any thread. With rescale="l1" the scale depends on every survivor of the tensor: a first pass measures the
    norms and keeps each slice's int8 masks (1 byte per entry and model, a quarter of a float32 copy of the
    inputs) for the merge pass, which is cheaper than drawing them again (0.5 ns per entry and model here).
    """

    def __init__(self, x: SliceInputs, density, rescale: Rescale):
        self.densities = [float(d) for d in per_model(density, x.count, "density")]
        self.random = x.random
        self.kept: dict[int, list[torch.Tensor | None]] = {}  # first-pass masks by slice start, until used
        factors = [1.0 / d if rescale == "inverse" else 1.0 for d in self.densities]
        if rescale == "l1" and x.slices.numel:
            # ‖τ‖₁ of a tensor is non-finite whenever one of its entries is: the inputs' NaN/Inf check
            before, after = x.slices.sum(self._norms, flags_nonfinite=True).tolist()
            factors = [b / a if b > 1e-12 and a > 1e-12 else 1.0 for b, a in zip(before, after)]
        # the survivors' positive factors, which the merge folds into its weights (None: all 1)
        self.scales = None if all(f == 1.0 for f in factors) else torch.tensor(factors)

    def _norms(self, chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        """(2, T) float64: per model ‖τ‖₁ and ‖τ ⊙ mask‖₁ over the slice (mergekit's rescale; 1 when either ~0)."""
        masks = [self._mask(i, sl) for i in range(len(self.densities))]
        self.kept[sl.start] = masks
        magnitudes = chunk.abs_()  # the slice is fresh, and this pass only measures it
        before = magnitudes.sum(1)  # float32 per slice: a float64-accumulating sum measured slower
        for row, mask in zip(magnitudes, masks):
            if mask is not None:
                drop_(row, mask)
        return torch.stack([before, magnitudes.sum(1)]).double()

    def _mask(self, model: int, sl: slice) -> torch.Tensor | None:
        density = self.densities[model]
        return keep_mask(self.random, model, sl, density) if density < 1 else None

    def __call__(self, chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        """The (T, C) slice with dropped entries zeroed, in place (a slice is always a fresh tensor); the
        survivors still need `scales`."""
        kept = self.kept.pop(sl.start, None)
        for i, row in enumerate(chunk):
            mask = self._mask(i, sl) if kept is None else kept[i]
            if mask is not None:
                drop_(row, mask)
        return chunk


def keep_mask(random: RandomField, stream: int, sl: slice, density: float) -> torch.Tensor:
    """Model `stream`'s int32 keep mask over slice sl (a seam where tests inject a reference's masks)."""
    return random.keep_mask(stream, sl, density)


@method(
    "dare_linear",
    params=Dare,
    space="delta",
    paper=PAPER,
    reference="peft.utils.merge_utils.dare_linear; mergekit dare_linear",
    traits=("stochastic",),
)
@sliced
def dare_linear(x: SliceInputs, p: Dare):
    """Drop-and-rescale each task vector, then λ · Σ_t w_t τ̃_t."""
    drop = Dropper(x, p.density, p.rescale)
    return lambda chunk, sl: scaled(combine(drop(chunk, sl), x.weights, p.normalize, drop.scales), p.scale)


@method(
    "dare_ties",
    params=DareTies,
    space="delta",
    paper=PAPER,
    reference="peft.utils.merge_utils.dare_ties; mergekit dare_ties",
    traits=("stochastic",),
)
@sliced
def dare_ties(x: SliceInputs, p: DareTies):
    """Drop-and-rescale each task vector, then TIES sign election and disjoint merge."""
    drop = Dropper(x, p.density, p.rescale)

    def merge_chunk(chunk: torch.Tensor, sl: slice) -> torch.Tensor:
        dropped = drop(chunk, sl)
        merged = disjoint_merge_(dropped, x.weights, p.sign_election, p.elect_on, p.normalize, drop.scales)
        return scaled(merged, p.scale)

    return merge_chunk
