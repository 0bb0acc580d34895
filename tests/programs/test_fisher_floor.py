"""FusionBench's floor placement, folded into unit-norm Fisher statistics (the merge against FusionBench's own is in
tests/methods/test_reference_statistics.py)."""
import pytest
import torch

from taskfuse.errors import UsageError
from taskfuse.programs.fisher_floor import floor_before_scaling
from taskfuse.programs.statistics import normalized_fisher


def test_the_fold_is_the_raw_fisher_plus_floor_over_its_norm_plus_floor():
    raw = {"a": torch.tensor([0.0, 1e-8, 3.0]), "b": torch.tensor([[4.0, 0.0]])}
    unit, norm = normalized_fisher(raw)
    assert norm == pytest.approx(5.0)
    folded = floor_before_scaling(unit, norm, 1e-3)
    for name, value in raw.items():
        torch.testing.assert_close(folded[name], (value + 1e-3) / (5.0 + 1e-3))


def test_a_fisher_no_data_moved_weighs_one_everywhere_and_bad_floors_are_refused():
    unit, norm = normalized_fisher({"a": torch.zeros(3)})
    assert torch.equal(floor_before_scaling(unit, norm, 1e-6)["a"], torch.ones(3))  # (0 + floor) / (0 + floor)
    for floor in (0.0, -1e-6, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="positive number"):
            floor_before_scaling(unit, norm, floor)
