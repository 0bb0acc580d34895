"""The data-free parameters a committed benchmark result chose on validation, for studies that start from them
instead of searching again (benchmarks/learned_over_merge.py keeps its own copy until its next rerun)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError


def chosen_params(result: Path, method: str) -> dict:
    """The `params` that `result` (a `taskfuse bench` result.json) chose for `method`."""
    rows = {m["method"]: m for m in json.loads(Path(result).read_text())["methods"]}
    if method not in rows:
        raise UsageError(f"{result} has no row {method!r}; its rows are {sorted(rows)}. Fix: name one of them.")
    return rows[method]["params"]


def row_normalized(result: Path, method: str) -> float | None:
    """The row's average normalised test score in `result` (a data-free or learned row), or None where it has no
    such row."""
    committed = json.loads(Path(result).read_text())
    rows = {m["method"]: m for m in [*committed["methods"], *committed.get("learned", [])]}
    return rows[method]["average"]["normalized"] if method in rows else None
