"""Arcee Fusion: one model's changes to the base kept only where they stand out, by an outlier threshold on an
importance score."""
from __future__ import annotations

import torch
from pydantic.dataclasses import dataclass
from torch import Tensor

from .inputs import Inputs
from .params import STRICT
from .registry import method

SOFTMAX_FLOOR = 1e-8  # added to both softmaxes before their ratio's logarithm, as mergekit does
# the threshold is the median plus this many interquartile ranges (Tukey's fence for outliers)
FENCE = 1.5
ROWS_PER_BLOCK = 4096  # rows whose softmaxes are held at once


@dataclass(config=STRICT)
class ArceeFusion:
    """No parameters: mergekit's arcee_fusion takes none."""


def row_divergence(tau: Tensor, base: Tensor) -> Tensor:
    """(*S[:-1], 1) KL(softmax(θ₀ + τ) ‖ softmax(θ₀)) of each row (the last axis; one value for a 1-D tensor), both
    read as logits. Computed a block of rows at a time: an embedding table's softmaxes are never held whole."""
    rows_tau, rows_base = tau.reshape(-1, tau.shape[-1]), base.reshape(-1, base.shape[-1])
    divergence = torch.empty(rows_tau.shape[0], 1, dtype=tau.dtype, device=tau.device)
    for start in range(0, rows_tau.shape[0], ROWS_PER_BLOCK):
        block = slice(start, start + ROWS_PER_BLOCK)
        q = torch.softmax(rows_base[block], dim=-1).add_(SOFTMAX_FLOOR)
        p = torch.softmax(rows_base[block] + rows_tau[block], dim=-1).add_(SOFTMAX_FLOOR)
        divergence[block] = (p * (p / q).log_()).sum(dim=-1, keepdim=True)
    return divergence.reshape(*tau.shape[:-1], 1)


def importance(tau: Tensor, base: Tensor) -> Tensor:
    """|τ| per entry times its row's divergence: an entry matters where it moved and its row's distribution, read
    as logits, moved too."""
    return tau.abs().mul_(row_divergence(tau, base))


def sortable_keys(flat: Tensor) -> Tensor:
    """int32 keys in the order of the float32 values: a non-negative float's bits grow with it; a negative one's lower
    31 bits are flipped, so that it sorts below every non-negative one and below the negatives nearer zero."""
    bits = flat.contiguous().view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def order_statistics(flat: Tensor, qs: tuple[float, ...]) -> list[Tensor]:
    """The entries at sorted positions ⌊q · (n − 1)⌋ (no interpolation between neighbours, as mergekit's quantiles),
    exactly. A radix select: one histogram of the keys' top 16 bits places every position in a bucket, and only that
    bucket's entries are searched; three selections over the whole tensor took about 3x as long."""
    buckets = (sortable_keys(flat) >> 16) + 32768
    ends = torch.bincount(buckets, minlength=65536).cumsum(0)
    found = []
    for q in qs:
        position = int(torch.tensor(q) * (flat.numel() - 1))  # float32 product, truncated, as mergekit computes it
        bucket = int(torch.searchsorted(ends, torch.tensor([position]), right=True))
        before = int(ends[bucket - 1]) if bucket > 0 else 0
        found.append(flat[buckets == bucket].kthvalue(position - before + 1).values)
    return found


def fusion_mask(scores: Tensor) -> Tensor:
    """1 where a score reaches median + 1.5 · (q3 − q1) over the tensor, else 0."""
    q1, median, q3 = order_statistics(scores.reshape(-1), (0.25, 0.5, 0.75))
    return (scores >= median + FENCE * (q3 - q1)).to(scores.dtype)


@method(
    "arcee_fusion",
    params=ArceeFusion,
    space="delta",
    paper="(no paper) Arcee Fusion, Arcee AI's merge method (mergekit's docs/merge_methods.md)",
    reference="mergekit 0.1.5's arcee_fusion (tests/fixtures/mergekit); mergekit takes the quartiles of tensors "
              "over a million entries from a random sample of a million, taskfuse takes them exactly",
    min_models=1,
    max_models=1,
)
def arcee_fusion(x: Inputs, p: ArceeFusion):
    """τ · 1[importance ≥ median + 1.5 · IQR], importance = |τ| · KL(softmax(θ₀ + τ) ‖ softmax(θ₀)) per row.

    The base is the spec's base, the other model its one model; the models' weights are not used (mergekit's
    neither)."""
    tau = x.stack[0]
    return tau * fusion_mask(importance(tau, x.base))
