"""Task vectors pre-processed by any registered delta method before their coefficients are learned.

AdaMerging++ learns over TIES-trimmed vectors (programs/sparsify.py); the same idea works for every delta method
whose merge is linear in the models' weights once its masks are drawn: DARE's random drops and rescale, Breadcrumbs'
and DELLA's magnitude masks, TIES with its sign elected on the raw vectors. For such a method M,

    M(τ; weights w) = Σ_t w_t · M(τ; e_t)        (e_t: weight 1 for model t, 0 for the others),

so the view learns Λ over τ'_t = M(τ; e_t) and the spec "method M, per-tensor weights Λ" replays exactly what it
learned. Whether M is linear is checked, not assumed: each tensor is also merged with random weights and compared
with Σ_t w_t τ'_t; a method that normalises by its weights, elects with them or mixes subspaces (task arithmetic
with normalize, TSV, Iso-C, ...) is refused there with the method and tensor named.

M sees each tensor as the engine does: the same name (its random draws are keyed on it), the same merge seed and
the same model order, so a mask drawn here is the mask the replayed merge draws.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import UsageError
from ..methods import Inputs, get_method
from ..methods.inputs import stable_seed
from .lazy_task_vectors import TiesTrimmedVector

# |M(w) − Σ w_t M(e_t)| allowed, relative to the largest |M(w)|: float32 summation in another order, not a
# different merge (a weight-normalised merge is off by a factor, not by rounding)
LINEARITY_TOLERANCE = 1e-4


def check_sparsifier(method: str, params: dict) -> object:
    """The validated params of `method` as a sparsifier: a registered delta method that needs no statistics."""
    info = get_method(method)
    if info.space != "delta" or info.statistics is not None:
        raise UsageError(f"--sparsify {method}: pre-processing takes a delta-space method that needs no statistics "
                         "(dare_linear, dare_ties, ties, breadcrumbs, della, ...). Fix: choose one of those.")
    return info.make_params(params, "--sparsify-param")


class _SparsifiedTensor:
    """M(τ; e_t) of one tensor for every t, kept for the tensor asked for last (the view asks for one tensor of
    every vector in turn)."""

    def __init__(self, vectors: list[Mapping], method: str, params: dict, seed: int, bases: Mapping | None):
        self.vectors, self.method, self.seed, self.bases = vectors, method, seed, bases
        self.info, self.params = get_method(method), check_sparsifier(method, params)
        self._name: str | None = None
        self._rows: list[Tensor] = []

    def _merge(self, stack: Tensor, weights: Tensor, base: Tensor | None, name: str) -> Tensor:
        # a fresh stack each call: a method may work in place on its inputs (the engine's stacks are scratch)
        return self.info.fn(Inputs(stack.clone(), weights, base, name, self.seed), self.params)

    def row(self, name: str, t: int) -> Tensor:
        if name != self._name:
            self._rows = []
            raw = [v[name] for v in self.vectors]
            if any(bool(r.any()) for r in raw):  # a tensor no model moved stays zero under every delta method
                raw = self._preprocessed(name, raw)
            self._name, self._rows = name, raw
        return self._rows[t]

    def _preprocessed(self, name: str, raw: list[Tensor]) -> list[Tensor]:
        stack = torch.stack([r.float() for r in raw])
        base = None if self.bases is None else self.bases[name].float()
        eye = torch.eye(len(raw))
        rows = [self._merge(stack, eye[t], base, name) for t in range(len(raw))]
        g = torch.Generator().manual_seed(stable_seed(self.seed, f"linearity:{name}"))
        weights = 0.25 + torch.rand(len(raw), generator=g)  # generic positive weights, none equal
        merged = self._merge(stack, weights, base, name)
        combined = sum(w * r for w, r in zip(weights.tolist(), rows))
        error = float((merged - combined).abs().max())
        if not error <= LINEARITY_TOLERANCE * max(float(merged.abs().max()), 1e-12):
            raise UsageError(
                f"--sparsify {self.method}: its merge of tensor {name!r} is not Σ_t w_t times each model's "
                f"pre-processed vector (off by {error:.3g}), so learned weights over those vectors would not replay "
                "as this method. It normalises by the weights, elects with them or mixes the models' subspaces. "
                "Fix: use a method linear in its weights (dare_linear, ties/dare_ties with elect_on raw, "
                "breadcrumbs, della_linear) with normalize none.")
        return [r.to(raw[t].dtype) for t, r in enumerate(rows)]


def sparsified_vectors(vectors: list[Mapping], method: str, params: dict, seed: int,
                       bases: Mapping | None = None) -> list[Mapping]:
    """Each vector pre-processed by `method` with `params` as the engine's merge at `seed` would (`bases`: θ₀ per
    tensor, for the methods that read it), computed on demand tensor by tensor."""
    shared = _SparsifiedTensor(vectors, method, params, seed, bases)
    # TiesTrimmedVector reads row t of any such shared pre-processing (its .row and .vectors), tensor by tensor
    return [TiesTrimmedVector(shared, t) for t in range(len(vectors))]


def sparsified_spec(spec: dict, method: str, params: dict) -> dict:
    """A learned spec (programs/learned_spec.py: task arithmetic at scale 1 with the learned weights) made to replay
    over the pre-processed vectors: the same weights and overrides, merged by `method` with `params`."""
    if spec["method"] != "task_arithmetic" or spec["params"] != {"scale": 1.0}:
        raise UsageError(f"a {spec['method']} spec cannot be replayed through --sparsify {method}: only the plain "
                         "learned merge (task arithmetic at scale 1 with learned weights) can.")
    return {**spec, "method": method, "params": dict(params)}
