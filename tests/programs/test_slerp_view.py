"""Self Positioning's view: θ(a, λ) equals the engine's self_positioning merge, and only a and λ learn."""
import itertools

import pytest
import torch
from transformers import AutoModel

from taskfuse import merge
from taskfuse.programs.learn import Recipe, TaskBatches
from taskfuse.programs.learning_loop import learn_coefficients
from taskfuse.programs.learned_spec import learned_spec
from taskfuse.programs.slerp_view import SlerpView
from tests.programs.test_merge_view import IDS, task_vectors


def test_the_view_is_the_engines_merge_of_its_own_spec(tmp_path, bert_family):
    base, tunes = bert_family
    view = SlerpView(AutoModel.from_pretrained(base).eval(), task_vectors(base, tunes), scale=1.0)
    with torch.no_grad():
        view.coefficients.copy_(torch.tensor([0.8, -0.4]))  # weights softmax(...) = (0.77, 0.23)
        view.log_scale.fill_(0.6)
        ours = view(input_ids=IDS).last_hidden_state
    spec = learned_spec(view, str(base), [str(t) for t in tunes])
    assert spec["method"] == "self_positioning" and spec["params"]["scale"] == pytest.approx(1.8221, abs=1e-4)
    assert [m["weight"] for m in spec["models"]] == pytest.approx(torch.softmax(torch.tensor([0.8, -0.4]), 0).tolist())
    merged = AutoModel.from_pretrained(merge(spec, tmp_path / "sp").out).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours, merged(input_ids=IDS).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_only_the_weights_and_the_scale_learn_and_the_penalty_pulls_lambda_down(bert_family):
    base, tunes = bert_family
    model = AutoModel.from_pretrained(base).eval()
    view = SlerpView(model, task_vectors(base, tunes), scale=1.0)
    assert [n for n, p in view.named_parameters() if p.requires_grad] == ["coefficients", "log_scale"]
    head = torch.nn.Linear(model.config.hidden_size, 3).requires_grad_(False)
    batch = ({"ids": IDS}, torch.tensor([0, 2]))
    task = TaskBatches(head, lambda: itertools.repeat(batch), lambda m, x: m(input_ids=x["ids"]).last_hidden_state[:, 0])
    # with the loss alone λ goes wherever the loss takes it; a large μ must pull it below that
    free = SlerpView(AutoModel.from_pretrained(base).eval(), task_vectors(base, tunes), scale=1.0)
    learn_coefficients(free, {"t": task}, Recipe("contrastive", 5, 0.05, "adam", None))
    learn_coefficients(view, {"t": task}, Recipe("contrastive", 5, 0.05, "adam", None, scale_penalty=10.0))
    assert float(view.scale) < float(free.scale) and float(view.scale) < 1.0
    assert all(p.grad is None for p in model.parameters())
    assert not torch.equal(free.coefficients.detach(), torch.zeros(2))  # the weights moved off equal
