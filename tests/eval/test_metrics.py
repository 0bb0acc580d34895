"""Accuracy and macro-F1 agree with scikit-learn's."""
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from taskfuse.eval.metrics import accuracy, macro_f1


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (50,), generator=g)
    predicted = torch.where(torch.rand(50, generator=g) < 0.6, labels, torch.randint(0, 5, (50,), generator=g))
    assert accuracy(predicted, labels) == pytest.approx(accuracy_score(labels, predicted))
    present = sorted(set(labels.tolist()) | set(predicted.tolist()))
    assert macro_f1(predicted, labels, 5) == pytest.approx(f1_score(labels, predicted, average="macro", labels=present))
