"""The Fisher's labels: the data's, drawn from the model, or the exact expectation over the model's classes."""
import pytest
import torch
from torch import nn

from taskfuse.errors import UsageError
from taskfuse.programs.fisher_labels import MAX_EXPECTED_PASSES, fisher_of_labels
from tests.programs.test_statistics import BagOfTokens


def logits(model, inputs):
    return model(inputs["ids"])


def gradients(model, loss_of) -> dict[str, torch.Tensor]:
    """The gradient of loss_of(model) by parameter name, dense (a different route from the estimators')."""
    params = dict(model.named_parameters())
    return torch.func.grad(lambda p: loss_of(lambda x: torch.func.functional_call(model, p, (x,))))(params)


@pytest.fixture
def data():
    torch.manual_seed(0)
    return BagOfTokens(), torch.randint(0, 8, (5, 4)), torch.tensor([0, 1, 2, 2, 1])


def test_the_expected_fisher_weighs_every_classs_squared_gradient_by_its_probability(data):
    model, ids, _ = data
    fisher, count = fisher_of_labels(model, [({"ids": ids[i:i + 1]}, None) for i in range(5)], logits, "expected")
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(5):
        p = torch.softmax(model(ids[i:i + 1]), -1)[0].detach()
        for y in range(3):
            g = gradients(model, lambda f: torch.log_softmax(f(ids[i:i + 1]), -1)[0, y])
            for n in want:
                want[n] += p[y] * g[n] ** 2 / 5
    assert count == 5
    for n in want:
        torch.testing.assert_close(fisher[n], want[n], rtol=1e-5, atol=1e-9, msg=n)


def test_labels_drawn_from_the_model_average_to_the_expected_fisher(data):
    model, ids, y = data
    items = [({"ids": ids[:1]}, y[:1])] * 3000
    sampled, _ = fisher_of_labels(model, items, logits, "sampled", seed=1)
    expected, _ = fisher_of_labels(model, items[:1], logits, "expected")
    given, _ = fisher_of_labels(model, items[:1], logits, "given")
    for n in ("hidden.weight", "out.weight"):
        error = float((sampled[n] - expected[n]).norm() / expected[n].norm())
        assert error < 0.05, (n, error)
        # the data's own label gives another answer: the test can tell them apart
        assert float((given[n] - expected[n]).norm() / expected[n].norm()) > 0.2
    again, _ = fisher_of_labels(model, items[:50], logits, "sampled", seed=1)
    partial, _ = fisher_of_labels(model, items[:50], logits, "sampled", seed=1)
    assert all(torch.equal(again[n], partial[n]) for n in again)  # seeded


def test_a_batch_as_one_item_squares_the_batchs_summed_gradient(data):
    model, ids, y = data
    fisher, count = fisher_of_labels(model, [({"ids": ids[:3]}, y[:3]), ({"ids": ids[3:]}, y[3:])], logits)
    halves = [gradients(model, lambda f, s=s: -nn.functional.cross_entropy(f(ids[s]), y[s], reduction="sum"))
              for s in (slice(0, 3), slice(3, 5))]
    assert count == 2
    for n, p in model.named_parameters():
        torch.testing.assert_close(fisher[n], (halves[0][n] ** 2 + halves[1][n] ** 2) / 2, rtol=1e-5, atol=1e-9)


def test_weighted_sum_squares_one_gradient_of_every_classs_root_probability_weighted_log_probability(data):
    """FusionBench's estimator: the square of a sum over a batch's examples and classes, not a sum of squares."""
    model, ids, y = data
    fisher, count = fisher_of_labels(model, [({"ids": ids[:3]}, y[:3]), ({"ids": ids[3:]}, y[3:])], logits,
                                     "weighted-sum")

    def weighted(f, rows):
        z = f(ids[rows])
        return (torch.softmax(z, -1).detach().sqrt() * torch.log_softmax(z, -1)).sum()

    halves = [gradients(model, lambda f, s=s: weighted(f, s)) for s in (slice(0, 3), slice(3, 5))]
    expected, _ = fisher_of_labels(model, [({"ids": ids[:3]}, y[:3]), ({"ids": ids[3:]}, y[3:])], logits, "expected")
    assert count == 2
    for n, p in model.named_parameters():
        torch.testing.assert_close(fisher[n], (halves[0][n] ** 2 + halves[1][n] ** 2) / 2, rtol=1e-5, atol=1e-9)
    assert float((fisher["out.weight"] - expected["out.weight"]).norm()) > 1e-3 * float(expected["out.weight"].norm())


def test_the_expected_fisher_refuses_a_vocabulary_and_unknown_labels_are_named(data):
    model, ids, y = data
    wide = nn.Linear(4, MAX_EXPECTED_PASSES + 1)
    with pytest.raises(UsageError, match="Fix: use sampled labels"):
        fisher_of_labels(wide, [({"x": torch.ones(1, 4)}, None)], lambda m, inputs: m(inputs["x"]), "expected")
    assert all(p.grad is None for p in wide.parameters())
    with pytest.raises(UsageError, match="'true'.*given, sampled, expected, weighted-sum"):
        fisher_of_labels(model, [({"ids": ids[:1]}, y[:1])], logits, "true")
