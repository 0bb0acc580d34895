"""Self Positioning's merge: an iterated SLERP of the task vectors, computed from their Gram matrix, times λ."""
import math

import pytest
import torch

from taskfuse.errors import SpecError
from taskfuse.methods import Inputs, SelfPositioning, Slerp, self_positioning, slerp
from taskfuse.ops.spherical import iterative_slerp_coefficients


def slerp_full(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """SLERP on the full vectors, written out from Shoemake's formula (no Gram matrix)."""
    theta = math.acos(float(a @ b / (a.norm() * b.norm())))
    return (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)


def test_the_gram_recursion_equals_slerp_step_by_step_on_the_full_vectors():
    torch.manual_seed(0)
    rows = torch.randn(4, 300, dtype=torch.float64)
    weights = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    v, total = rows[0], 0.1
    for k in range(1, 4):
        total += float(weights[k])
        v = slerp_full(v, rows[k], float(weights[k]) / total)
    c = iterative_slerp_coefficients(rows @ rows.T, weights)
    torch.testing.assert_close(c @ rows, v, rtol=1e-10, atol=1e-10)


def test_two_models_are_slerp_at_the_second_ones_share_and_lambda_scales():
    torch.manual_seed(1)
    a, b = torch.randn(2, 64)
    ours = self_positioning(Inputs.of([a, b], [1.0, 3.0]), SelfPositioning(scale=0.5))
    torch.testing.assert_close(ours, 0.5 * slerp(Inputs.of([a, b]), Slerp(t=0.75)), rtol=1e-6, atol=1e-6)


def test_colinear_task_vectors_give_their_weighted_average_and_zero_weight_models_are_skipped():
    a = torch.randn(32)
    out = self_positioning(Inputs.of([a, 2 * a, 5 * a], [1.0, 3.0, 0.0]), SelfPositioning(scale=1.0))
    torch.testing.assert_close(out, (a + 3 * 2 * a) / 4, rtol=1e-6, atol=1e-6)


def test_orthogonal_equal_norm_vectors_keep_their_norm_where_an_average_shrinks_it():
    rows = torch.eye(4) * 3.0  # four orthogonal task vectors of norm 3
    out = self_positioning(Inputs.of(list(rows), [1.0] * 4), SelfPositioning())
    assert float(out.norm()) == pytest.approx(3.0, rel=1e-5)  # the mean's norm would be 1.5
    assert torch.all(out > 0)


def test_weights_get_finite_gradients_through_the_recursion():
    torch.manual_seed(2)
    rows = torch.randn(3, 40, dtype=torch.float64)
    logits = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    c = iterative_slerp_coefficients(rows @ rows.T, torch.softmax(logits, 0))
    (c @ rows).pow(2).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("weights", [[1.0, -0.5], [0.0, 0.0]])
def test_negative_or_all_zero_weights_are_refused(weights):
    with pytest.raises(SpecError, match="non-negative"):
        self_positioning(Inputs.of(torch.randn(2, 8), weights), SelfPositioning())
