"""Multi-SLERP where its spherical mean has no direction (its merges against mergekit's: the multislerp fixtures of
tests/methods/test_reference_mergekit.py)."""
import pytest
import torch

from taskfuse.errors import IncompatibleInputsError
from taskfuse.methods import Inputs, MultiSlerp, multislerp

A = torch.tensor([[1.0, 2.0], [3.0, -1.0]])


def test_directions_that_cancel_fall_back_to_the_weighted_sum_for_two_models():
    torch.testing.assert_close(multislerp(Inputs.of([A, -A]), MultiSlerp()), torch.zeros(2, 2))


def test_directions_that_cancel_among_more_models_are_refused_naming_the_tensor():
    with pytest.raises(IncompatibleInputsError, match=r"multislerp at tensor 'w': .* sum to zero.*Fix"):
        multislerp(Inputs.of([A, -A, A, -A], key="w"), MultiSlerp())


def test_one_model_is_returned_as_it_is_and_norms_are_averaged_not_normalised():
    torch.testing.assert_close(multislerp(Inputs.of([A]), MultiSlerp()), A)
    both = multislerp(Inputs.of([A, 3 * A]), MultiSlerp())  # one direction: the weighted mean norm, twice A's
    torch.testing.assert_close(both, 2 * A, rtol=1e-6, atol=1e-6)


def spherical_mean_float64(stack: torch.Tensor, weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The spherical mean written out directly on the vectors, in float64."""
    flat = stack.reshape(stack.shape[0], -1).double()
    w = weights.double() / weights.double().sum()
    norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w[:, None]).sum(0)
    mean = mean / torch.linalg.vector_norm(mean)
    tangent = ((units - (units @ mean)[:, None] * mean) * w[:, None]).sum(0)
    angle = torch.linalg.vector_norm(tangent) + eps
    return (mean * torch.cos(angle) + tangent * torch.sin(angle) / angle) * (norms[:, 0] * w).sum()


def test_nearly_colinear_fine_tunes_of_one_base_are_merged_to_float32_accuracy():
    # fine-tunes differ from their base by ~1e-3 of its size: the tangent is tiny beside the weights, where a float32
    # product over the whole tensor (the first implementation) lost it to rounding (1e-3 relative on an embedding)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2_000_000, generator=g)
    tunes = torch.stack([base + 1e-3 * torch.randn(base.shape, generator=g) for _ in range(4)])
    weights = torch.tensor([1.0, 2.0, 1.0, 3.0])
    merged = multislerp(Inputs.of(list(tunes), weights.tolist()), MultiSlerp())
    expected = spherical_mean_float64(tunes, weights)
    assert float((merged.double() - expected).abs().max() / expected.abs().max()) < 1e-6
