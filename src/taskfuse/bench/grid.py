"""Per-method hyperparameter grids searched on the validation split.

Ranges follow each paper's own search (task arithmetic: λ over 0.1..1; TIES: top-20% density with λ near 1 under
the disjoint mean; TSV-M and Iso-C: α near 1 to 2). Quick runs search a centred subset.
"""
from __future__ import annotations

from itertools import product

from ..methods import all_methods

EXCLUDED = {
    "slerp": "interpolates exactly two models; the zoo has one expert per task",
    "passthrough": "copies one input unchanged; the experts' own rows show that",
    "self_positioning": "its weights and scale are learned on a probe set: the self_positioning learned row",
    "partitioned_task_arithmetic": "replays coefficients learned per random partition of each tensor (taskfuse "
                                   "learn --partitions); without them it is task arithmetic",
    # registered after the committed full run (benchmarks/results/bench-full): scored on the same experts and splits,
    # over the grid below, by benchmarks/data_free_additions.py until a full run gives them their rows
    "wudi": "not in the committed full run yet: benchmarks/data_free_additions.py scores it",
    "magmax": "not in the committed full run yet: benchmarks/data_free_additions.py scores it",
    "knots": "not in the committed full run yet: benchmarks/data_free_additions.py scores it",
    "sce": "not in the committed full run yet: benchmarks/data_free_additions.py scores it",
    "nuslerp": "interpolates exactly two models; the zoo has one expert per task",
    "nuslerp_task_vectors": "interpolates exactly two task vectors; the zoo has one expert per task",
    "multislerp": "not in the committed full run yet: benchmarks/data_free_additions.py scores it",
    "multislerp_task_vectors": "not in the committed full run yet: benchmarks/data_free_additions.py scores it",
    "ram": "not in the committed full run yet: benchmarks/data_free_additions.py scores it",
    "nearswap": "pulls the base toward exactly one model; the zoo has one expert per task",
    "arcee_fusion": "fuses exactly one model into the base; the zoo has one expert per task",
}

_SUMMED = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # λ on a sum of T task vectors
_MEANS = (0.6, 1.0, 1.5, 2.0)  # λ on a disjoint mean
_SPECTRAL = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)  # α on a flattened spectrum (Iso-C's σ̄ is far below the top σ)


def _grid(**axes) -> list[dict]:
    names = list(axes)
    return [dict(zip(names, values)) for values in product(*(axes[n] for n in names))]


GRIDS: dict[str, list[dict]] = {
    "linear": [{}],
    "model_stock": [{}],
    "karcher": [{}],
    "task_arithmetic": _grid(scale=_SUMMED),
    # ties density and the dare densities: optima at an edge of the previous full run's grid, hence one more point
    "ties": _grid(density=(0.1, 0.2, 0.3, 0.4), scale=_MEANS),
    "dare_ties": _grid(density=(0.2, 0.3, 0.5), scale=(0.3, 0.6, 1.0, 1.5)),
    "dare_linear": _grid(density=(0.2, 0.3, 0.6), scale=(0.2, 0.3, 0.5)),
    "breadcrumbs": _grid(scale=(0.2, 0.3, 0.5)),
    "breadcrumbs_ties": _grid(scale=(0.6, 1.0, 1.5, 2.0)),
    "della": _grid(scale=(0.6, 1.0, 1.5)),
    "della_linear": _grid(scale=(0.2, 0.3, 0.5)),
    # tall_lambda 0.2 and scale 0.3 won at the low edges of (0.2-0.6) x (0.3-0.7) in the previous full run
    "consensus": _grid(tall_lambda=(0.1, 0.2, 0.4, 0.6), scale=(0.2, 0.3, 0.5, 0.7)),
    # Spectral merges peaked at the top of narrower grids in the first full run, hence the wider ranges.
    "tsv": _grid(scale=(0.5, 1.0, 1.5, 2.0)),
    "iso_c": _grid(scale=_SPECTRAL),
    "iso_cts": _grid(scale=(*_SPECTRAL, 5.0, 6.0)),  # still rising at 4 in the second full run
}


def benchmarked_methods() -> list[str]:
    """Every registered data-free method, each either gridded or excluded for a stated reason (methods that read
    statistics of data are learned rows: bench/statistics_rows.py)."""
    names = [m.name for m in all_methods() if m.statistics is None]
    unaccounted = [n for n in names if n not in GRIDS and n not in EXCLUDED]
    if unaccounted:
        raise KeyError(f"methods {unaccounted} have no benchmark grid; add one to taskfuse/bench/grid.py or list them "
                       "in EXCLUDED with the reason")
    return [n for n in names if n in GRIDS]


def configs(method: str, quick: bool) -> list[dict]:
    """The grid, or for quick runs the two configurations at its middle."""
    grid = GRIDS[method]
    if not quick or len(grid) <= 2:
        return grid
    middle = len(grid) // 2
    return grid[middle - 1: middle + 1]
