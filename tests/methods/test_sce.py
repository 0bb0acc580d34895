"""SCE against the steps written out by hand on a small example, both variants (mergekit's against mergekit itself:
tests/methods/test_reference_mergekit.py's sce fixture)."""
import pytest
import torch

from taskfuse.methods import Inputs, Sce, sce

# two task vectors of four entries: variances (a-b)²/4 = 1, 0.25, 0, 4
A = torch.tensor([1.0, 0.5, 2.0, -3.0])
B = torch.tensor([-1.0, 1.5, 2.0, 1.0])


def test_every_entry_selected():
    # η ∝ mean of squares: A 14.25/4, B 8.25/4 -> 14.25/22.5, 8.25/22.5; sum signs: +, +, +, - -> entry 0 keeps A,
    # entry 3 keeps A (sum -2), entries 1 and 2 both
    eta_a, eta_b = 14.25 / 22.5, 8.25 / 22.5
    expected = torch.tensor([1.0, (0.5 * eta_a + 1.5 * eta_b) / (eta_a + eta_b), 2.0, -3.0])
    torch.testing.assert_close(sce(Inputs.of([A, B]), Sce()), expected)


def test_selection_picks_the_coefficients_entries_or_also_the_merged_ones():
    # half of the three entries whose variance is not zero, rounded down: entry 3 alone: η from 9 and 1
    eta_a, eta_b = 9 / 10, 1 / 10
    authors = sce(Inputs.of([A, B]), Sce(select_topk=0.5))
    torch.testing.assert_close(authors, torch.tensor([1.0, (0.5 * eta_a + 1.5 * eta_b) / (eta_a + eta_b), 2.0, -3.0]))
    mergekit = sce(Inputs.of([A, B]), Sce(select_topk=0.5, selection="task_vectors"))
    torch.testing.assert_close(mergekit, torch.tensor([0.0, 0.0, 0.0, -3.0]))  # unselected entries dropped


def test_coefficients_become_uniform_below_the_floor_and_weights_scale_them():
    small_a, small_b = A * 1e-4, B * 1e-4  # mean squares ~1e-8: under mergekit's 1e-6
    uniform = sce(Inputs.of([small_a, small_b]), Sce(coefficient_floor=1e-6))
    torch.testing.assert_close(uniform[1], torch.tensor(1.0e-4))  # (0.5 + 1.5) / 2
    proportional = sce(Inputs.of([small_a, small_b]), Sce())
    assert proportional[1] < uniform[1]  # A's larger share pulls entry 1 toward 0.5e-4
    weighted = sce(Inputs.of([A, B], [1.0, 3.0]), Sce())
    eta_a, eta_b = 14.25 / 22.5, 3 * 8.25 / 22.5
    assert weighted[1] == pytest.approx((0.5 * eta_a + 1.5 * eta_b) / (eta_a + eta_b))


def test_entries_tied_at_the_variance_cut_off_are_selected_by_lower_index():
    # four entries of equal variance, half selected: the first two, whatever the slicing (torch.topk's choice among
    # ties was unspecified, so the first implementation's mask could change with the build)
    a, b = torch.ones(4), -torch.ones(4)
    merged = sce(Inputs.of([a, b]), Sce(select_topk=0.5, selection="task_vectors"))
    torch.testing.assert_close(merged, torch.tensor([1.0, 1.0, 0.0, 0.0]))  # a zero sum elects +: a's entries
