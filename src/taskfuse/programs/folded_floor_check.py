"""A Fisher merge of statistics with FusionBench's floor folded in (`taskfuse statistics --floor-before-scaling`,
programs/fisher_floor.py) must not add a second floor, and must not mix them with statistics that lack it.

Both mistakes merge silently into a model that is neither tool's: the fisher method adds its own `floor` (1e-6 unless
the spec says otherwise) to every entry, so folded statistics get the floor twice, and a model whose statistics carry
no folded floor is weighed on a different scale from the others. This check runs before a merge plans anything, from
the statistics' records alone.
"""
from __future__ import annotations

from ..errors import SpecError
from ..io.statistics_file import read_record
from ..methods.registry import get_method
from ..spec.model import MergeSpec
from .fisher_floor import NEGLIGIBLE_FLOOR

# how much the merge's own floor may move the smallest folded value, relatively: a floor this far below what the
# statistics already carry changes no float32 weight
NEGLIGIBLE_SHARE = 1e-6


def reads_fisher(method: str | None) -> bool:
    return method is not None and get_method(method).statistics == "fisher"


def merge_floors(spec: MergeSpec) -> list[tuple[str, float]]:
    """Each floor the spec's Fisher merges add, with where it is given (a per-layer list gives one per layer)."""
    found = []
    places = [("params", spec.method, spec.params)]
    places += [(f"overrides[{i}] ({ov.globs[0]!r})", ov.method or spec.method, {**spec.params, **ov.params})
               for i, ov in enumerate(spec.overrides)]
    for where, method, params in places:
        if not reads_fisher(method):
            continue
        if "floor" not in params:
            where, floor = f"{where}, by the method's default", get_method(method).params().floor
        else:
            floor = params["floor"]
        for value in floor if isinstance(floor, list) else [floor]:
            if isinstance(value, (int, float)):  # anything else is the method's own parameter check's to refuse
                found.append((where, float(value)))
    return found


def check_folded_floor(spec: MergeSpec) -> None:
    """Refuse a Fisher merge that mixes statistics with and without a folded floor, or adds a floor that is not
    negligible beside the one folded in."""
    floors = merge_floors(spec)
    with_statistics = [m for m in spec.models if m.statistics]
    if not floors or not with_statistics:
        return
    records = [(m.path, read_record(m.statistics)) for m in with_statistics]
    folded = [(path, r) for path, r in records if r.get("floor_before_scaling") is not None]
    if not folded:
        return
    plain = [path for path, r in records if r.get("floor_before_scaling") is None]
    if plain:
        raise SpecError(f"model {plain[0]!r}'s Fisher statistics have no floor folded in, but model "
                        f"{folded[0][0]!r}'s have ({folded[0][1]['floor_before_scaling']:g}, "
                        "written with --floor-before-scaling): the merge would weigh them on different scales. Fix: "
                        "gather every model's statistics with the same --floor-before-scaling, or none with it.")
    floors_folded = sorted({r["floor_before_scaling"] for _, r in folded})
    if len(floors_folded) > 1:
        listed = ", ".join(f"{f:g}" for f in floors_folded)
        raise SpecError(f"the models' Fisher statistics have different floors folded in ({listed}), so the merge "
                        "would weigh them on different scales. Fix: gather every "
                        "model's statistics with the same --floor-before-scaling.")
    # the smallest value a folded file can hold: floor / (‖F‖ + floor), where a Fisher entry is 0
    smallest = min(r["floor_before_scaling"] / (float(r.get("fisher_norm", 1.0)) + r["floor_before_scaling"])
                   for _, r in folded)
    for where, value in floors:
        if value > max(NEGLIGIBLE_SHARE * smallest, NEGLIGIBLE_FLOOR):
            raise SpecError(f"method fisher at {where} adds a floor of {value:g} to statistics whose floor is already "
                            f"folded in (models {', '.join(repr(p) for p, _ in folded)}), so every entry would get a "
                            f"second floor. Fix: set `params: {{floor: {NEGLIGIBLE_FLOOR:g}}}` in the spec.")
