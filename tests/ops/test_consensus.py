"""Scales folded into the consensus merges give what scaling the rows first gives (DARE's rescale rides on them)."""
import itertools

import pytest
import torch

from taskfuse.ops.consensus import combine, disjoint_merge, disjoint_merge_


def stack_and_weights(seed: int, negative_weight: bool):
    g = torch.Generator().manual_seed(seed)
    stack = torch.randn(3, 4096, generator=g)
    stack[stack.abs() < 0.5] = 0.0  # trimmed entries, as the merges see them
    weights = torch.tensor([0.7, -0.4 if negative_weight else 0.4, 1.3])
    return stack, weights


@pytest.mark.parametrize("how,elect_on,normalize,negative",
                         itertools.product(["mass", "count"], ["raw", "weighted"], ["none", "count", "weights"],
                                           [False, True]))
def test_disjoint_merge_with_scales_equals_merging_prescaled_rows(how, elect_on, normalize, negative):
    stack, weights = stack_and_weights(1, negative)
    scales = torch.tensor([2.0, 1.7, 0.6])
    expected = disjoint_merge(stack * scales[:, None], weights, how, elect_on, normalize)
    ours = disjoint_merge_(stack.clone(), weights, how, elect_on, normalize, scales)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, disjoint_merge(stack, weights, how, elect_on, normalize))  # the scales mattered


@pytest.mark.parametrize("normalize", ["none", "count", "weights"])
def test_combine_with_scales_equals_combining_prescaled_rows(normalize):
    stack, weights = stack_and_weights(2, False)
    scales = torch.tensor([2.0, 1.7, 0.6])
    torch.testing.assert_close(combine(stack, weights, normalize, scales),
                               combine(stack * scales[:, None], weights, normalize), rtol=1e-5, atol=1e-6)
