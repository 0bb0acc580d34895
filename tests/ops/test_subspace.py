"""The subspace methods' SVD: a low-rank matrix (a sum of LoRA updates) goes through a narrow random range and gives
the full SVD's directions and singular values above float32 round-off; anything else gets the full SVD itself."""
import importlib

import pytest
import torch

from taskfuse.methods import Inputs, IsoC, IsoCts, Tsv, iso_c, iso_cts, tsv
from taskfuse.ops import subspace
from taskfuse.ops.subspace import numerical_rank, svd


def lora_like(rows: int, cols: int, rank: int, seed: int) -> torch.Tensor:
    """B·A of the given rank in float32, plus float32 round-off of weights near 0.05 (what θ_t − θ₀ carries)."""
    g = torch.Generator().manual_seed(seed)
    update = (torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)) * 1e-3
    weights = torch.randn(rows, cols, generator=g) * 0.05
    return (weights + update) - weights


def test_a_low_rank_matrix_keeps_the_full_svds_directions_above_round_off():
    m = lora_like(600, 520, 40, 0)
    u, s, vh = svd(m)
    fu, fs, fvh = torch.linalg.svd(m.double(), full_matrices=False)
    r = numerical_rank(fs, m.shape)
    assert r == 40 and numerical_rank(s, m.shape) == r and len(s) == 128  # the narrow path, same rank
    torch.testing.assert_close(s[:r], fs[:r], rtol=1e-9, atol=0)
    # the rank-r parts differ by the round-off the narrow range leaves out (σ₄₁ is 1e-7 of σ₁ here), far below
    # the threshold at which a direction counts (6e-5 of σ₁ for this shape)
    torch.testing.assert_close((u[:, :r] * s[:r]) @ vh[:r], (fu[:, :r] * fs[:r]) @ fvh[:r], rtol=0,
                               atol=1e-7 * float(fs[0]))


@pytest.mark.parametrize("shape", [(600, 520), (200, 300)])
def test_a_full_rank_or_small_matrix_gets_the_full_svd(shape):
    m = torch.randn(*shape)
    for ours, full in zip(svd(m), torch.linalg.svd(m.double(), full_matrices=False)):
        assert torch.equal(ours, full)


def test_a_residual_below_round_off_relative_to_the_merge_is_no_direction():
    """Iso-CTS's per-task residual after the common subspace: noise relative to the merge's top singular value."""
    m = lora_like(600, 520, 8, 1) * 1e-6
    _, s, _ = svd(m, largest=1e3)
    assert numerical_rank(s, m.shape, largest=1e3) == 0 and len(s) == 0  # no direction at all


@pytest.mark.parametrize("merge, params", [(iso_c, IsoC(scale=1.0)), (iso_cts, IsoCts(scale=1.0)),
                                           (tsv, Tsv(scale=1.0))])
def test_subspace_merges_of_lora_updates_equal_those_of_the_full_svd(monkeypatch, merge, params):
    stack = torch.stack([lora_like(600, 520, 8, seed) for seed in range(6)])
    inputs = Inputs.of(list(stack), torch.ones(6))
    fast = merge(inputs, params)
    for module in ("taskfuse.methods.iso", "taskfuse.methods.tsv"):  # the modules, not the functions they export
        monkeypatch.setattr(importlib.import_module(module), "svd", lambda m, largest=None: subspace._full(m.double()))
    full = merge(inputs, params)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5 * float(full.abs().max()))
