"""Reference conformance against PEFT's merge utilities (peft.utils.merge_utils), installed from PyPI.

PEFT conventions = our defaults (paper): sign elected on unweighted trimmed vectors, disjoint mean by count,
DARE rescale 1/density. For DARE the random mask is reproduced exactly: PEFT draws torch.bernoulli from the global
generator, one model at a time, and we draw from a generator seeded with stable_seed(seed, key) in the same order,
so seeding the global generator with that value injects the identical mask.
"""
import peft
import pytest
import torch
from peft.utils import merge_utils as ref

from taskfuse.methods import Dare, DareTies, Inputs, TaskArithmetic, Ties, dare_linear, dare_ties, task_arithmetic
from taskfuse.methods import ties
from taskfuse.methods.inputs import stable_seed

TOL = dict(atol=1e-6, rtol=1e-5)
SHAPES = [(64,), (33, 17), (4, 8, 6)]


def inputs(shape, seed=0, t=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(t)], torch.tensor([1.0, 0.7, 0.4][:t])


def test_peft_version_recorded():
    assert peft.__version__  # the version this suite compared against is printed by pytest's header below
    print("peft", peft.__version__)


@pytest.mark.parametrize("shape", SHAPES)
def test_task_arithmetic(shape):
    tvs, w = inputs(shape)
    ours = task_arithmetic(Inputs.of(tvs, w), TaskArithmetic())
    torch.testing.assert_close(ours, ref.task_arithmetic(tvs, w), **TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("election", [("total", "mass"), ("frequency", "count")])
def test_ties(shape, density, election):
    tvs, w = inputs(shape, seed=1)
    ours = ties(Inputs.of(tvs, w), Ties(density=density, sign_election=election[1]))
    theirs = ref.ties(tvs, w, density, majority_sign_method=election[0])
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.2, 0.7])
def test_dare_linear_with_injected_mask(shape, density):
    tvs, w = inputs(shape, seed=2)
    x = Inputs.of(tvs, w, key="model.layers.0.mlp.weight", seed=5)
    torch.manual_seed(stable_seed(5, x.key))
    theirs = ref.dare_linear(tvs, w, density)
    torch.testing.assert_close(dare_linear(x, Dare(density=density)), theirs, **TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("election", [("total", "mass"), ("frequency", "count")])
def test_dare_ties_with_injected_mask(shape, election):
    tvs, w = inputs(shape, seed=3)
    x = Inputs.of(tvs, w, key="k", seed=9)
    torch.manual_seed(stable_seed(9, "k"))
    theirs = ref.dare_ties(tvs, w, 0.4, majority_sign_method=election[0])
    ours = dare_ties(x, DareTies(density=0.4, sign_election=election[1]))
    torch.testing.assert_close(ours, theirs, **TOL)


def test_magnitude_prune_equals_ties_trim_then_sum():
    tvs, w = inputs((40, 9), seed=4)
    theirs = ref.magnitude_prune(tvs, w, 0.3)
    from taskfuse.methods.ties import trim_stack

    trimmed = trim_stack(Inputs.of(tvs, w), 0.3, "tensor", None)
    torch.testing.assert_close((trimmed * w[:, None, None]).sum(0), theirs, **TOL)
