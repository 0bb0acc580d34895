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
