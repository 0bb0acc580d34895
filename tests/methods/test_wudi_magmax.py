"""WUDI-Merging and MagMax against their papers' definitions, computed the long way."""
import pytest
import torch

from taskfuse.methods import Inputs, MagMax, Wudi, magmax, wudi
from taskfuse.methods.wudi import interference_terms, minimiser


def written_loss(merged: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
    """The paper's objective as written: Σ_t ‖(τ − τ_t) τ_tᵀ‖²_F / ‖τ_t‖²_F."""
    return sum(((merged - t) @ t.T).square().sum() / t.square().sum() for t in stack)


def task_stack(shape=(12, 9), count=3, rank=None, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn((count, *shape), generator=g, dtype=torch.float64)
    return torch.randn((count, shape[0], rank), generator=g, dtype=torch.float64) @ \
        torch.randn((count, rank, shape[1]), generator=g, dtype=torch.float64)


def test_closed_form_gradient_is_the_written_loss():
    stack = task_stack()
    merged = torch.randn(12, 9, dtype=torch.float64, requires_grad=True)
    written_loss(merged, stack).backward()
    gram_sum, pulled = interference_terms(stack)
    torch.testing.assert_close(2 * (merged.detach() @ gram_sum - pulled), merged.grad)


def test_exact_solver_is_the_minimum_and_adam_descends_towards_it():
    stack = task_stack().float()
    x = Inputs.of(stack)
    exact, adam = wudi(x, Wudi(solver="exact")).double(), wudi(x, Wudi(steps=300, lr=1e-2)).double()
    start = stack.sum(0).double()
    exact.requires_grad_(True)
    written_loss(exact, stack.double()).backward()
    assert exact.grad.abs().max() < 1e-6  # stationary
    losses = [float(written_loss(t.detach(), stack.double())) for t in (start, adam, exact)]
    assert losses[0] > losses[1] > losses[2] - 1e-9, losses
    assert losses[1] < 0.5 * losses[0]


def test_no_steps_is_task_arithmetic_and_one_model_is_kept_exactly():
    stack = task_stack().float()
    torch.testing.assert_close(wudi(Inputs.of(stack), Wudi(steps=0)), stack.sum(0))
    one = Inputs.of(stack[:1])
    torch.testing.assert_close(wudi(one, Wudi(solver="exact")), stack[0], atol=1e-5, rtol=1e-5)


def test_exact_solver_stays_in_the_span_of_low_rank_updates():
    """LoRA updates: G is singular, and the minimum-norm solution has no part outside the updates' input span."""
    stack = task_stack(shape=(20, 16), count=2, rank=2).float()
    merged = wudi(Inputs.of(stack), Wudi(solver="exact")).double()
    span = torch.linalg.svd(stack.double().reshape(-1, 16), full_matrices=False)[2][:4]  # (4, 16)
    outside = merged - merged @ span.T @ span
    assert outside.abs().max() < 1e-5 * merged.abs().max()
    assert torch.isfinite(merged).all()


@pytest.mark.parametrize("rank", [None, 2])
def test_the_pseudo_inverse_is_the_least_squares_solution_with_the_cut(rank):
    """The eigendecomposition (any device) gives what CPU-only SVD least squares with the same cut gives, on a full
    G and on the singular G of low-rank updates."""
    gram_sum, pulled = interference_terms(task_stack(shape=(20, 16), count=3, rank=rank).float())
    rcond = torch.finfo(torch.float32).eps * gram_sum.shape[0]
    reference = torch.linalg.lstsq(gram_sum, pulled.T.double(), rcond=rcond, driver="gelsd").solution.T
    torch.testing.assert_close(minimiser(gram_sum, pulled), reference, rtol=1e-9, atol=1e-9 * reference.abs().max())


def test_a_zero_task_vector_is_ignored_not_divided_by():
    stack = torch.cat([task_stack().float(), torch.zeros(1, 12, 9)])
    merged = wudi(Inputs.of(stack), Wudi(solver="exact"))
    torch.testing.assert_close(merged, wudi(Inputs.of(stack[:3]), Wudi(solver="exact")))


def test_vectors_take_the_mean():
    stack = torch.tensor([[1.0, 2.0], [3.0, -2.0]])
    torch.testing.assert_close(wudi(Inputs.of(stack), Wudi()), torch.tensor([2.0, 0.0]))


def test_magmax_takes_the_largest_magnitude_per_entry():
    stack = torch.tensor([[0.1, -3.0, 2.0, 0.0], [-0.5, 1.0, 2.5, 0.0], [0.2, 2.0, -1.0, 0.0]])
    torch.testing.assert_close(magmax(Inputs.of(stack), MagMax(scale=2.0)), torch.tensor([-1.0, -6.0, 5.0, 0.0]))


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_magmax_breaks_ties_the_same_way_in_any_order(order):
    stack = torch.tensor([[1.5, -2.0], [-1.5, 2.0]])[order]
    torch.testing.assert_close(magmax(Inputs.of(stack), MagMax()), torch.tensor([1.5, 2.0]))


def test_magmax_weights_scale_before_selecting():
    stack = torch.tensor([[1.0], [-3.0]])
    assert magmax(Inputs.of(stack, [4.0, 1.0]), MagMax()).item() == 4.0
