"""EMR-Merging: elected vector, per-task masks and whole-model rescalers."""
import pytest


def test_emr_elects_masks_and_rescales_to_each_tasks_magnitude():
    import torch

    from taskfuse.routing.emr import elect, task_models
    deltas = torch.tensor([[1.0, -0.6, 0.2], [0.5, 0.4, -0.3]])
    # signs of the column sums +, -, -; magnitude: the largest among the tasks that agree
    torch.testing.assert_close(elect(deltas), torch.tensor([1.0, -0.6, -0.3]))
    base = {"w": torch.zeros(3)}
    experts = {"a": {"w": deltas[0]}, "b": {"w": deltas[1]}}
    models = task_models(base, experts, ["w"])
    unified = elect(deltas)
    for t, d in zip("ab", deltas):
        kept = (d * unified > 0)
        assert torch.equal(models[t]["w"] != 0, kept)
        assert models[t]["w"].abs().sum() == pytest.approx(float(d.abs().sum()))  # magnitude kept
