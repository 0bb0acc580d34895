"""The differentiable merge view: θ(Λ) equals what the streaming engine writes, and only Λ learns."""
import pytest
import torch
from transformers import AutoModel

from taskfuse import merge
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.programs.merge_view import MergeView, Parameterization
from tests.conftest import spec_for

IDS = torch.tensor([[1, 5, 9, 13, 17, 3], [2, 4, 6, 8, 10, 12]])


def task_vectors(base, tunes):
    b = Checkpoint.open(base)
    return [{n: Checkpoint.open(t).read(n).float() - b.read(n).float() for n in b.tensors} for t in tunes]


def test_task_wise_view_equals_the_engines_task_arithmetic(tmp_path, bert_family):
    base, tunes = bert_family
    view = MergeView(AutoModel.from_pretrained(base).eval(), task_vectors(base, tunes), Parameterization("task"))
    with torch.no_grad():
        view.coefficients.copy_(torch.tensor([0.7, 0.2]))
        ours = view(input_ids=IDS).last_hidden_state
    spec = spec_for("task_arithmetic", base, tunes)
    spec["models"][0]["weight"], spec["models"][1]["weight"] = 0.7, 0.2
    merged = AutoModel.from_pretrained(merge(spec, tmp_path / "ta").out).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours, merged(input_ids=IDS).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_only_the_coefficients_get_gradients_and_they_are_right(bert_family):
    base, tunes = bert_family
    model = AutoModel.from_pretrained(base).eval()
    view = MergeView(model, task_vectors(base, tunes), Parameterization("layer")).double()
    loss = view(input_ids=IDS).last_hidden_state.pow(2).mean()
    loss.backward()
    assert view.coefficients.grad is not None and view.coefficients.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    # central finite differences on a few coefficients (float64)
    for task, tensor in ((0, 0), (1, len(view.names) - 1), (1, 3)):
        h = 1e-6
        with torch.no_grad():
            view.coefficients[task, tensor] += h
            up = view(input_ids=IDS).last_hidden_state.pow(2).mean()
            view.coefficients[task, tensor] -= 2 * h
            down = view(input_ids=IDS).last_hidden_state.pow(2).mean()
            view.coefficients[task, tensor] += h
        assert float(view.coefficients.grad[task, tensor]) == pytest.approx(float((up - down) / (2 * h)), rel=1e-4,
                                                                            abs=1e-9)


def test_partitions_are_seeded_cover_every_entry_and_reduce_to_layer_wise(bert_family):
    base, tunes = bert_family
    tvs = task_vectors(base, tunes)
    make = lambda k, seed: MergeView(AutoModel.from_pretrained(base).eval(), tvs, Parameterization("partition", k, seed))
    view, again, other = make(4, 0), make(4, 0), make(4, 1)
    assert view.coefficients.shape == (2, len(view.names), 4)
    parts = [[v.partition(i) for i in range(len(v.names))] for v in (view, again, other)]
    assert all(torch.equal(a, b) for a, b in zip(parts[0], parts[1]))
    assert not all(torch.equal(a, b) for a, b in zip(parts[0], parts[2]))
    big = max(parts[0], key=torch.numel)
    counts = torch.bincount(big.reshape(-1), minlength=4)
    assert counts.sum() == big.numel() and counts.min() > 0.2 * big.numel()  # four partitions of about a quarter
    layer = MergeView(AutoModel.from_pretrained(base).eval(), tvs, Parameterization("layer"))
    with torch.no_grad():  # equal coefficients across partitions: the layer-wise view
        view.coefficients.copy_(torch.linspace(0.1, 0.9, view.coefficients[..., 0].numel()).reshape(2, -1)[..., None]
                                .expand_as(view.coefficients))
        layer.coefficients.copy_(view.coefficients[..., 0])
        torch.testing.assert_close(view(input_ids=IDS).last_hidden_state, layer(input_ids=IDS).last_hidden_state)


def test_frozen_parameters_get_no_coefficient(bert_family):
    base, tunes = bert_family
    tvs = task_vectors(base, tunes)
    frozen = "embeddings.word_embeddings.weight"
    for tv in tvs:
        tv[frozen] = torch.zeros_like(tv[frozen])
    view = MergeView(AutoModel.from_pretrained(base).eval(), tvs)
    assert frozen not in view.names and set(view.tensor_weights()) == set(view.names)
    with pytest.raises(ValueError, match="partition"):
        MergeView(AutoModel.from_pretrained(base).eval(), tvs, Parameterization("partition", 2)).tensor_weights()
