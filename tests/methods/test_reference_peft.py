"""Reference conformance against PEFT's merge utilities (peft.utils.merge_utils), installed from PyPI.

PEFT conventions = our defaults (paper): sign elected on unweighted trimmed vectors, disjoint mean by count,
DARE rescale 1/density. For DARE the random masks are injected: PEFT draws torch.bernoulli from the global
generator, one model after another; we draw the same masks with the same seed and hand them to our merge through
its mask-drawing hook (our own draws use a faster sampler with the same distribution; test_closed_form checks it
statistically).
"""
import peft
import pytest
import torch
from peft.utils import merge_utils as ref

from taskfuse.methods import Dare, DareTies, Inputs, TaskArithmetic, Ties, dare_linear, dare_ties, task_arithmetic
from taskfuse.methods import ties
from taskfuse.methods import dare as dare_module

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


def peft_masks(tvs, density, seed):
    """The masks PEFT's random pruning draws after torch.manual_seed(seed), in its order."""
    torch.manual_seed(seed)
    return [torch.bernoulli(torch.full_like(t, density)) for t in tvs]


def inject(monkeypatch, masks):
    queue = list(masks)
    # as int8 -1/0 masks, the form dare's keep_mask returns
    monkeypatch.setattr(dare_module, "keep_mask",
                        lambda random, stream, sl, keep: queue.pop(0).reshape(-1)[sl].to(torch.int8).neg())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.2, 0.7])
def test_dare_linear_with_injected_mask(monkeypatch, shape, density):
    tvs, w = inputs(shape, seed=2)
    inject(monkeypatch, peft_masks(tvs, density, 5))
    torch.manual_seed(5)
    theirs = ref.dare_linear(tvs, w, density)
    torch.testing.assert_close(dare_linear(Inputs.of(tvs, w, key="k"), Dare(density=density)), theirs, **TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("election", [("total", "mass"), ("frequency", "count")])
def test_dare_ties_with_injected_mask(monkeypatch, shape, election):
    tvs, w = inputs(shape, seed=3)
    inject(monkeypatch, peft_masks(tvs, 0.4, 9))
    torch.manual_seed(9)
    theirs = ref.dare_ties(tvs, w, 0.4, majority_sign_method=election[0])
    ours = dare_ties(Inputs.of(tvs, w, key="k"), DareTies(density=0.4, sign_election=election[1]))
    torch.testing.assert_close(ours, theirs, **TOL)


def test_magnitude_prune_equals_ties_trim_then_sum():
    tvs, w = inputs((40, 9), seed=4)
    theirs = ref.magnitude_prune(tvs, w, 0.3)
    from taskfuse.methods.ties import trim_stack

    trimmed = trim_stack(Inputs.of(tvs, w), 0.3)
    torch.testing.assert_close((trimmed * w[:, None, None]).sum(0), theirs, **TOL)
