"""The study of methods registered after the committed full run: each grid scored on validation, the best point on
test, the anchors at the committed run's choices, and its table."""
import importlib.util
import json
from pathlib import Path

import pytest

from taskfuse.bench.data_free_additions import ADDED_GRIDS, LORA_GRIDS, data_free_additions
from taskfuse.bench.grid import EXCLUDED, GRIDS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
COMMITTED = json.loads((BENCHMARKS / "results" / "bench-full" / "result.json").read_text())


def test_the_added_methods_are_the_ones_the_full_run_leaves_out():
    assert set(ADDED_GRIDS) <= set(EXCLUDED) and not set(ADDED_GRIDS) & set(GRIDS)
    assert not set(ADDED_GRIDS) & {m["method"] for m in COMMITTED["methods"]}


def test_best_validation_point_is_scored_on_test_beside_the_anchors(tiny_zoo, tmp_path):
    grids = {"wudi": [{"solver": "exact", "scale": 1.0}, {"solver": "adam", "steps": 2, "scale": 0.5}],
             "magmax": [{"scale": 0.2}, {"scale": 1.0}]}
    lora_grids = {"knots": [{"density": 0.2, "scale": 1.0}, {"density": 1.0, "scale": 0.5}],
                  "task_arithmetic": [{"scale": 0.3}]}
    lines = []
    result = data_free_additions("tiny", tmp_path, lines.append, COMMITTED, grids, lora_grids)
    assert [r["method"] for r in result["rows"]] == ["wudi", "magmax"]
    assert [r["method"] for r in result["lora_rows"]] == ["knots", "task_arithmetic"]
    for row in result["rows"] + result["lora_rows"]:
        validation = [t["validation_normalized"] for t in row["trials"]]
        assert [t["params"] for t in row["trials"]] == {**grids, **lora_grids}[row["method"]]
        assert row["params"] == row["trials"][validation.index(max(validation))]["params"]
        assert set(row["test_normalized"]) == set(tiny_zoo.tasks) and 0 < row["average"]["normalized"] < 1.5
    assert [a["method"] for a in result["anchors"]] == ["task_arithmetic", "iso_cts"]
    assert result["anchors"][1]["params"] == next(m for m in COMMITTED["methods"] if m["method"] == "iso_cts")["params"]
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["magmax-best", "wudi-best"]
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["knots-best", "task_arithmetic-best"]
    assert any("on test" in line for line in lines)

    spec = importlib.util.spec_from_file_location("script", BENCHMARKS / "data_free_additions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.markdown({**result, "command": "python benchmarks/data_free_additions.py", "code": None,
                             "seconds": 1.0})
    assert "| wudi |" in table and "iso_cts (bench-full's choice, scored again)" in table
    assert table.count("| full | magmax | {'scale'") == len(grids["magmax"])
    assert table.count("| LoRA | knots | {'density'") == len(lora_grids["knots"])
    full_part = table.split("Over the LoRA experts")[0]
    listed = [float(r.split(" | ")[2]) for r in full_part.splitlines() if r.startswith("| ") and "---" not in r
              and not r.startswith("| row")]
    assert len(listed) == 4 and listed == sorted(listed, reverse=True)


@pytest.mark.parametrize("grids", [ADDED_GRIDS, LORA_GRIDS])
def test_every_grid_point_is_valid(grids):
    from taskfuse.methods import get_method

    for method, grid in grids.items():
        for params in grid:
            get_method(method).params(**params)
