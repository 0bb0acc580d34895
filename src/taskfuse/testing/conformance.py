"""The conformance kit: generic checks every registered merge method must pass (like scikit-learn's
check_estimator). Each check takes a MethodInfo and raises AssertionError with a reason on failure.

    >>> from taskfuse.testing.conformance import CHECKS, check_method
    >>> check_method(get_method("ties"))   # runs every applicable check
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..methods.inputs import Inputs
from ..methods.registry import MethodInfo

SHAPES = [(1,), (2,), (63,), (1, 1), (2, 63), (100, 7), (7, 100), (3, 2, 4, 5)]


def model_count(info: MethodInfo, wanted: int = 3) -> int:
    return min(max(wanted, info.min_models), info.max_models or wanted)


def sample(info: MethodInfo, shape: tuple[int, ...], seed: int = 0, count: int | None = None) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    t = count or model_count(info)
    stack = torch.randn((t, *shape), generator=g)
    weights = 0.5 + torch.rand(t, generator=g)
    base = torch.randn(shape, generator=g)
    return Inputs(stack, weights, base, key=f"layer.{seed}.weight", seed=seed,
                  statistics=sample_statistics(info, shape, t, g))


def sample_statistics(info: MethodInfo, shape: tuple[int, ...], count: int, g: torch.Generator):
    """Statistics of the kind the method reads, as data would give them: positive-definite Grams of a matrix's
    inputs ((T, in, in), none for other shapes, which the method merges without), non-negative Fisher values."""
    if info.statistics == "gram":
        if len(shape) != 2:
            return None
        inputs = torch.randn((count, 4 * shape[1] + 4, shape[1]), generator=g)  # (T, n, in) activations
        return inputs.transpose(1, 2) @ inputs / inputs.shape[1]
    if info.statistics == "fisher":
        return torch.rand((count, *shape), generator=g) ** 4  # long-tailed, as squared gradients are
    return None


def run(info: MethodInfo, x: Inputs) -> torch.Tensor:
    return info.fn(x, info.params())


def check_shapes(info: MethodInfo) -> None:
    for shape in SHAPES:
        out = run(info, sample(info, shape))
        assert out.shape == shape, f"{info.name}: output shape {tuple(out.shape)} for input {shape}"
        assert out.dtype == torch.float32, f"{info.name}: output dtype {out.dtype} for float32 inputs"
        assert torch.isfinite(out).all(), f"{info.name}: non-finite output for shape {shape}"


def check_no_mutation(info: MethodInfo) -> None:
    x = sample(info, (17, 9))
    inputs = {"stack": x.stack, "weights": x.weights, "base": x.base, "statistics": x.statistics}
    before = {k: v.clone() for k, v in inputs.items() if v is not None}
    run(info, x)
    for what, a in before.items():
        assert torch.equal(a, inputs[what]), f"{info.name} mutated its input {what}"


def check_zeros(info: MethodInfo) -> None:
    x = sample(info, (8, 5))
    zero = replace(x, stack=torch.zeros_like(x.stack))
    out = run(info, zero)
    assert torch.isfinite(out).all(), f"{info.name}: NaN/Inf on all-zero inputs"
    assert torch.allclose(out, torch.zeros_like(out)), f"{info.name}: all-zero inputs give non-zero output"


def check_deterministic(info: MethodInfo) -> None:
    x = sample(info, (31, 6))
    assert torch.equal(run(info, x), run(info, x)), f"{info.name}: two calls with the same seed differ"
    if "stochastic" in info.traits:
        other = Inputs(x.stack, x.weights, x.base, key=x.key + ".other", seed=x.seed)
        assert not torch.equal(run(info, x), run(info, other)), f"{info.name}: draws ignore the tensor name"


def check_symmetric(info: MethodInfo) -> None:
    x = sample(info, (12, 10))
    perm = torch.randperm(x.count, generator=torch.Generator().manual_seed(1))
    y = replace(x, stack=x.stack[perm], weights=x.weights[perm],
                statistics=None if x.statistics is None else x.statistics[perm])
    assert torch.allclose(run(info, x), run(info, y), atol=1e-5), f"{info.name}: depends on model order"


def check_chunkable(info: MethodInfo) -> None:
    x = sample(info, (6, 40))
    whole = run(info, x)
    part = run(info, Inputs(x.stack[:, :, :13], x.weights, x.base[:, :13], x.key, x.seed))
    assert torch.allclose(whole[:, :13], part, atol=1e-6), f"{info.name}: chunked result differs from whole"


def check_idempotent(info: MethodInfo) -> None:
    x = sample(info, (9, 11))
    same = replace(x, stack=x.stack[:1].expand_as(x.stack).clone(), weights=torch.ones(x.count))
    # sparsifying methods are idempotent only when they keep everything
    fields = info.params.__dataclass_fields__
    params = info.params(density=1.0) if "density" in fields else info.params()
    out = info.fn(same, params)
    assert torch.allclose(out, x.stack[0], atol=1e-5), f"{info.name}: copies of one model changed it"


def check_gradients(info: MethodInfo) -> None:
    x = sample(info, (4, 3))
    stack = x.stack.double().requires_grad_(True)
    weights = x.weights.double().requires_grad_(True)

    def f(s, w):
        return info.fn(Inputs(s, w, x.base.double(), x.key, x.seed), info.params())

    assert torch.autograd.gradcheck(f, (stack, weights)), f"{info.name}: gradcheck failed"


def check_reads_statistics(info: MethodInfo) -> None:
    """A method that declares statistics uses them: the same models merge differently with and without."""
    x = sample(info, (12, 10))
    assert x.statistics is not None
    assert not torch.allclose(run(info, x), run(info, replace(x, statistics=None)), atol=1e-4), \
        f"{info.name}: declares {info.statistics!r} statistics but ignores them"


def out_of_order(work, slices):
    """A Slices runner that works through small groups last to first, as threads may."""
    groups = [slices[i:i + 3] for i in range(0, len(slices), 3)]
    done = {i: work(group) for i, group in reversed(list(enumerate(groups)))}
    return [done[i] for i in range(len(groups))]


def check_sliced(info: MethodInfo) -> None:
    """The sliced form (what the executor streams) over tiny slices run out of order equals the whole method."""
    from ..methods.sliced import SliceInputs
    from ..ops.slices import Slices

    x = sample(info, (13, 11))
    flat = x.stack.reshape(x.count, -1)
    merge_chunk = info.prepare(SliceInputs(Slices.of_stack(flat, out_of_order, size=7), x.weights, (13, 11),
                                           x.key, x.seed), info.params())
    pieces = list(enumerate(Slices.of_stack(flat, size=7).slices))
    merged = {i: merge_chunk(flat[:, sl].clone(), sl) for i, sl in reversed(pieces)}  # merges hold no state
    sliced = torch.cat([merged[i] for i, _ in pieces])
    assert torch.allclose(sliced.reshape(13, 11), run(info, x), atol=1e-5), \
        f"{info.name}: the sliced form differs from the whole-tensor method"


CHECKS: dict[str, tuple[Callable[[MethodInfo], None], str | None]] = {
    "shapes": (check_shapes, None),
    "no_mutation": (check_no_mutation, None),
    "zeros": (check_zeros, None),
    "deterministic": (check_deterministic, None),
    "symmetric": (check_symmetric, "symmetric"),
    "chunkable": (check_chunkable, "chunkable"),
    "idempotent": (check_idempotent, "idempotent"),
    "gradients": (check_gradients, "differentiable"),
    "sliced": (check_sliced, "sliced"),
    "statistics": (check_reads_statistics, "statistics"),
}


def applicable(info: MethodInfo) -> list[str]:
    """Checks that apply to `info`: the generic ones plus one per declared trait ("sliced" for methods written in
    the sliced form, "statistics" for methods that read statistics)."""
    traits = info.traits | ({"sliced"} if info.prepare is not None else set()) | \
        ({"statistics"} if info.statistics else set())
    return [name for name, (_, trait) in CHECKS.items() if trait is None or trait in traits]


def check_method(info: MethodInfo) -> None:
    for name in applicable(info):
        CHECKS[name][0](info)
