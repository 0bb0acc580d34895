"""Arcee Fusion worked by hand (against mergekit itself: the arcee_fusion fixture)."""
import importlib

import pytest
import torch

from taskfuse.methods import ArceeFusion, Inputs, arcee_fusion
from taskfuse.methods.arcee_fusion import fusion_mask, importance, order_statistics, row_divergence


def test_importance_is_the_change_times_its_rows_divergence():
    base = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    tau = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    scores = importance(tau, base)
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0) + 1e-8
    q = torch.tensor([0.5, 0.5]) + 1e-8
    expected_kl = float((p * (p / q).log()).sum())
    torch.testing.assert_close(scores, torch.tensor([[expected_kl, 0.0], [0.0, 0.0]]))


def test_the_quartiles_are_entries_at_truncated_positions_not_interpolated():
    values = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0, 6.0])  # sorted 1..6; positions ⌊q · 5⌋ = 1, 2, 3
    assert [float(v) for v in order_statistics(values, (0.25, 0.5, 0.75))] == [2.0, 3.0, 4.0]


@pytest.mark.parametrize("values", [
    torch.randn(2_000_001, generator=torch.Generator().manual_seed(0)),  # past mergekit's sample, both signs
    torch.randn(50_000, generator=torch.Generator().manual_seed(1)).abs() * 1e-30,  # subnormal and tiny
    torch.tensor([0.0, -0.0, 3.0, -3.0, 3.0, 1e-45, -1e-45, float("inf"), -float("inf"), 2.5] * 7),  # ties, edges
])
def test_the_radix_selection_is_exact(values):
    qs = (0.0, 0.25, 0.5, 0.75, 1.0, 0.1)
    ordered = values.sort().values
    expected = [float(ordered[int(torch.tensor(q) * (values.numel() - 1))]) for q in qs]
    assert [float(v) for v in order_statistics(values, qs)] == expected


def test_only_outlying_scores_pass_the_fence():
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0, 9.0])  # q1 = median = q3 = 1: the fence is at 1, reached by all
    assert fusion_mask(scores).tolist() == [1.0] * 6
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 30.0])  # median 4 + 1.5 · (6 − 2) = 10
    assert fusion_mask(scores).tolist() == [0.0] * 8 + [1.0]


def test_the_merge_keeps_the_outlying_changes_and_drops_the_rest():
    torch.manual_seed(0)
    base = torch.randn(16, 32)
    tau = 0.01 * torch.randn(16, 32)
    tau[3, 5] = 3.0  # one large change, in a row whose distribution it moves
    merged = arcee_fusion(Inputs(tau[None], torch.ones(1), base), ArceeFusion())
    kept = merged != 0
    assert kept[3, 5] and 0 < int(kept.sum()) < tau.numel() // 4
    torch.testing.assert_close(merged[kept], tau[kept])  # a kept change is whole
    # the models' weights do not enter (mergekit's neither)
    torch.testing.assert_close(arcee_fusion(Inputs(tau[None], torch.full((1,), 0.3), base), ArceeFusion()), merged)


def test_rows_are_taken_a_block_at_a_time_with_the_same_result(monkeypatch):
    torch.manual_seed(1)
    base, tau = torch.randn(7, 5, 6), 0.1 * torch.randn(7, 5, 6)
    whole = row_divergence(tau, base)
    module = importlib.import_module("taskfuse.methods.arcee_fusion")  # the package's name is the function
    monkeypatch.setattr(module, "ROWS_PER_BLOCK", 4)  # 35 rows: blocks of 4, the last of 3
    torch.testing.assert_close(row_divergence(tau, base), whole)
    assert whole.shape == (7, 5, 1) and row_divergence(tau[0, 0], base[0, 0]).shape == (1,)
