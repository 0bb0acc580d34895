"""The method registry: one source for the CLI listing, the spec schema, docs and the conformance kit."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Literal

from pydantic import TypeAdapter, ValidationError

from ..errors import SpecError, UnknownMethodError

Space = Literal["delta", "weight"]

# Traits a method may declare; the conformance kit tests each declared one.
TRAITS = {
    "symmetric": "permuting the models (and their weights) leaves the result unchanged",
    "chunkable": "elementwise: merging a slice equals slicing the merge",
    "stochastic": "draws from Inputs.generator() or Inputs.random",
    "differentiable": "gradients flow to the weights (used by learned programs)",
    "matrix": "2-D tensors get a subspace treatment; other shapes a documented fallback",
    "idempotent": "merging T copies of one tensor (unit weights, density 1) returns that tensor",
}


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable[..., Any]
    params: type
    space: Space
    paper: str
    reference: str
    traits: frozenset[str] = field(default_factory=frozenset)
    min_models: int = 1
    max_models: int | None = None
    summary: str = ""
    # "statistics over slices, then merge per slice" form (methods/sliced.py), which the executor streams
    prepare: Callable[..., Any] | None = None
    # the per-model statistics the method reads (a key of STATISTICS), gathered from data by programs/statistics.py
    statistics: str | None = None

    def make_params(self, values: dict[str, Any], where: str = "") -> Any:
        """Validated Params from a plain dict; every bad key or value reported at once as a SpecError."""
        known = {f.name for f in fields(self.params)}
        unknown = sorted(set(values) - known)
        problems = [
            f"unknown parameter {k!r} for method {self.name!r}{_suggest(k, known)}" for k in unknown
        ]
        if not problems:
            try:
                return TypeAdapter(self.params).validate_python(values)
            except ValidationError as e:
                problems = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        at = f" at {where}" if where else ""
        raise SpecError(f"invalid parameters for {self.name!r}{at}: " + "; ".join(problems))


# Statistics a method may merge with, per tensor and model; each model's file says which kind it holds.
STATISTICS = {
    "gram": "X^T X / n of each linear layer's inputs over the tokens of the task's data, (in, in) per weight",
    "fisher": "diagonal empirical Fisher: the mean squared gradient of log p(label | input), shaped as the tensor",
}

_REGISTRY: dict[str, MethodInfo] = {}


def method(
    name: str,
    *,
    params: type,
    space: Space,
    paper: str,
    reference: str = "",
    traits: tuple[str, ...] = (),
    min_models: int = 1,
    max_models: int | None = None,
    statistics: str | None = None,
):
    """Register `fn(x: Inputs, p: Params) -> Tensor` under `name`."""
    bad = set(traits) - set(TRAITS)
    if bad:
        raise ValueError(f"unknown traits {sorted(bad)} for {name}")
    if statistics is not None and statistics not in STATISTICS:
        raise ValueError(f"unknown statistics {statistics!r} for {name}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = MethodInfo(
            name, fn, params, space, paper, reference, frozenset(traits), min_models, max_models, summary,
            getattr(fn, "prepare", None), statistics,
        )
        return fn

    return register


def _suggest(name: str, choices: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def get_method(name: str) -> MethodInfo:
    """The registered method, or an UnknownMethodError suggesting the closest names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = _suggest(name, list(_REGISTRY)) or f"; registered: {', '.join(sorted(_REGISTRY))}"
        raise UnknownMethodError(f"unknown merge method {name!r}{hint}") from None


def all_methods() -> list[MethodInfo]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def suggest(name: str, choices) -> str:
    """Public ' (did you mean ...)' suffix, shared with the spec loader."""
    return _suggest(name, choices)
