"""A delta-space merge whose models include its base.

mergekit configs list the base among their models, and mergekit leaves it out of the task vectors (so does
taskfuse's reader of those configs). A taskfuse spec takes the base from `base:`; listed again under `models`, it is
a model whose task vector is zero, which the means count (TIES's, task arithmetic's when normalised) and the subspace
methods (TSV, Iso-C/CTS) give a share of their rank: a weaker merge, written without a word. So it is refused before
anything is planned.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import SpecError
from ..methods.registry import get_method
from ..spec.model import MergeSpec


def check_base_not_among_models(spec: MergeSpec) -> None:
    if spec.base is None or get_method(spec.method).space != "delta":
        return
    for i, model in enumerate(spec.models):
        if _same(model.path, spec.base):
            raise SpecError(f"models[{i}] ({model.path}) is the spec's base: {spec.method} merges task vectors "
                            "(model − base), and the base's own is zero, which its means and subspaces would count "
                            "as a model's. Fix: remove it from `models`; `base:` names it (mergekit configs list "
                            "the base among their models, and taskfuse's reader of them leaves it out).")


def _same(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())
