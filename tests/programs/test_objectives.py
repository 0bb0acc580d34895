import math

import pytest

import torch

from taskfuse.programs.objectives import entropy


def test_entropy_of_known_distributions():
    uniform = torch.zeros(3, 4)  # every class equally likely: log 4 nats
    assert float(entropy(uniform)) == pytest.approx(math.log(4), rel=1e-6)
    certain = torch.tensor([[80.0, 0.0, 0.0]])  # one class: ~0
    assert float(entropy(certain)) < 1e-30
    p = torch.tensor([0.5, 0.25, 0.25])
    assert float(entropy(p.log()[None])) == pytest.approx(-(p * p.log()).sum().item())


def test_entropy_gradient_sharpens_predictions():
    logits = torch.tensor([[1.0, 0.5, 0.0]], requires_grad=True)
    entropy(logits).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 2]  # descending raises the top class and lowers the bottom one
