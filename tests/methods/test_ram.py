"""RAM and RAM+ worked by hand (against mergekit itself: the ram and ramplus_tl fixtures)."""
import torch

from taskfuse.methods import Inputs, Ram, ram

A = torch.tensor([0.5, 0.5, 0.0, 1e-6])
B = torch.tensor([0.0, 0.3, 0.0, -2e-6])


def test_a_change_one_model_made_is_kept_and_shared_ones_are_averaged():
    torch.testing.assert_close(ram(Inputs.of([A, B]), Ram()), torch.tensor([0.5, 0.4, 0.0, 0.0]))


def test_ram_plus_scales_a_models_unique_changes_by_its_shared_to_unique_ratio():
    # A: one unique, one shared entry: ratio 1, clipped to α = 0.5 -> λ = 1 + 0.2 · 0.5; B has no unique entry
    merged = ram(Inputs.of([A, B]), Ram(r=0.2, alpha=0.5))
    torch.testing.assert_close(merged, torch.tensor([0.5 * 1.1, 0.4, 0.0, 0.0]))
