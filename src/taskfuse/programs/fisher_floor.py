"""FusionBench's placement of the Fisher floor, for statistics that `method: fisher` then merges as they are.

The fisher method adds its floor to each model's unit-norm Fisher F/‖F‖ (methods/fisher.py). FusionBench 0.2.33
adds it to the raw Fisher and scales by the norm plus the floor: (F + floor) / (‖F‖ + floor). The two differ where
a model's norm is small or its entries are near zero, and on the benchmark's experts that is 0.6 points
(benchmarks/results/fisher-labels). Folding FusionBench's floor into the stored statistics, from the unit-norm
Fisher and the norm it was scaled by, lets a user reproduce its merge through our engine: the merge's own floor is
then set negligible (NEGLIGIBLE_FLOOR) so that it adds nothing the statistics do not already carry.
"""
from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor

from ..errors import UsageError
from ..io.statistics_file import read_record, save_statistics, statistics_file, statistics_kind

# `params: {floor: ...}` for a fisher merge of folded statistics: positive, as the method requires, and far below
# any floor / (‖F‖ + floor) a float32 Fisher can carry
NEGLIGIBLE_FLOOR = 1e-30


def check_floor(floor: float) -> float:
    if not (floor > 0 and math.isfinite(floor)):
        raise UsageError(f"floor before scaling {floor!r}: give a positive number such as 1e-6 (FusionBench's).")
    return floor


def floor_before_scaling(unit: dict[str, Tensor], norm: float, floor: float) -> dict[str, Tensor]:
    """(F + floor) / (‖F‖ + floor) from the unit-norm F/‖F‖ and ‖F‖ (a Fisher of norm 0 is 0 everywhere: each
    entry then weighs 1, as in FusionBench)."""
    check_floor(floor)
    return {name: (f * norm + floor) / (norm + floor) for name, f in unit.items()}


def fold_floor(folder: str | Path, floor: float, out: str | Path, norm: float | None = None) -> Path:
    """Write to `out` the unit-norm Fisher statistics in `folder` with FusionBench's floor folded in; the norm they
    were scaled by from their record (`taskfuse statistics` writes it) unless given."""
    from safetensors.torch import load_file
    kind = statistics_kind(folder, str(folder))
    record = read_record(folder)
    if kind != "fisher":
        raise UsageError(f"statistics {folder}: they hold {kind}, not fisher, so there is no Fisher floor to place. "
                         "Fix: fold the folder `taskfuse statistics --kind fisher` wrote.")
    if record.get("floor_before_scaling") is not None:
        raise UsageError(f"statistics {folder}: a floor ({record['floor_before_scaling']:g}) is already folded in. "
                         "Fix: fold the statistics as gathered.")
    if norm is None:
        if record.get("normalized") is False or "fisher_norm" not in record:
            raise UsageError(f"statistics {folder}: its record gives no norm the Fisher was scaled by (gathered with "
                             "--no-normalize, or not by taskfuse statistics). Fix: gather with normalisation on.")
        norm = float(record["fisher_norm"])
    tensors = floor_before_scaling(load_file(str(statistics_file(folder))), norm, floor)
    kept = {k: v for k, v in record.items() if k != "kind"}
    return save_statistics(out, tensors, "fisher", {**kept, "fisher_norm": norm, "floor_before_scaling": floor})
