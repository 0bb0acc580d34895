"""Exact top-k selection over slices: every path (sampled bucket right or wrong, ties remembered per slice or
counted in an extra pass, small tensors without a sample) keeps exactly the k largest |x|, ties by lower index."""
import pytest
import torch

import taskfuse.ops.chunks as chunks
import taskfuse.ops.selection as selection
import taskfuse.ops.slices as slices_module
from taskfuse.ops.selection import magnitude_cuts
from taskfuse.ops.slices import Slices


def expected_kept(row: torch.Tensor, k: int) -> list[int]:
    order = sorted(range(row.numel()), key=lambda i: (-abs(float(row[i])), i))
    return sorted(order[:k])


def kept(stack: torch.Tensor, counts: list[int]) -> list[list[int]]:
    cuts = magnitude_cuts(Slices.of_stack(stack), counts)
    return [cut.keep(row.abs()).nonzero().squeeze(1).tolist() for cut, row in zip(cuts, stack)]


@pytest.fixture
def tiny_slices(monkeypatch):
    monkeypatch.setattr(slices_module, "chunk_slices", lambda n: chunks.chunk_slices(n, 7))


def heavy_ties(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (2, n), generator=g).float() * 1e-4  # few distinct magnitudes, as bf16 deltas


@pytest.mark.parametrize("n", [50, 7 * 40 + 3])  # below and above the size that estimates from a sample
@pytest.mark.parametrize("sparse_limit", [64, 0])  # ties remembered per slice, or counted in an extra pass
def test_selection_is_exact_with_heavy_ties(tiny_slices, monkeypatch, n, sparse_limit):
    monkeypatch.setattr(selection, "SPARSE_LIMIT", sparse_limit)
    stack = heavy_ties(n, seed=n)
    for k in (1, n // 7, n // 2, n - 1):
        assert kept(stack, [k, n - k]) == [expected_kept(stack[0], k), expected_kept(stack[1], n - k)]


def test_wrong_sampled_bucket_costs_passes_not_exactness(tiny_slices, monkeypatch):
    n = 7 * 64
    stack = torch.randn(2, n) * 1e-3
    # the sampled slices (every 16th) hold the largest values, so the estimate points at the wrong bucket
    for start in range(0, n, 7 * 16):
        stack[:, start:start + 7] *= 1e3
    passes = []
    original = selection._low_halves
    monkeypatch.setattr(selection, "_low_halves", lambda *a, **k: passes.append(1) or original(*a, **k))
    k = n // 2
    assert kept(stack, [k, k]) == [expected_kept(stack[0], k), expected_kept(stack[1], k)]
    assert len(passes) == 2


def test_all_values_distinct_and_trivial_counts(tiny_slices):
    stack = torch.randn(3, 7 * 40)
    n = stack.shape[1]
    assert kept(stack, [0, n, 17]) == [[], list(range(n)), expected_kept(stack[2], 17)]
