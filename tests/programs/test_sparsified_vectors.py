"""Learning over task vectors pre-processed by a registered delta method (AdaMerging++ with any sparsifier): the
view's θ(Λ) is what the method merges with the learned weights, and a method not linear in its weights is refused."""
import pytest
import torch
from transformers import AutoModel

from taskfuse import merge
from taskfuse.errors import SpecError, UsageError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.programs.learned_spec import learned_spec
from taskfuse.programs.merge_view import MergeView, Parameterization
from taskfuse.programs.sparsified_vectors import check_sparsifier, sparsified_spec, sparsified_vectors
from taskfuse.programs.sparsify import ties_vectors
from tests.programs.test_merge_view import task_vectors


def view_over(base, tunes, method, params, kind="layer", seed=3):
    model = AutoModel.from_pretrained(base).eval()
    theta0 = {n: p.detach() for n, p in model.named_parameters()}
    vectors = sparsified_vectors(task_vectors(base, tunes), method, params, seed, bases=theta0)
    view = MergeView(model, vectors, Parameterization(kind))
    with torch.no_grad():
        view.coefficients.copy_(torch.rand(view.coefficients.shape, generator=torch.Generator().manual_seed(1)) * 2 - 0.5)
    return view


@pytest.mark.parametrize("method, params", [("dare_linear", {"density": 0.4}),
                                            ("dare_linear", {"density": 0.4, "rescale": "l1"}),
                                            ("breadcrumbs", {}),
                                            ("ties", {"density": 0.3, "normalize": "none"})])
def test_the_method_with_learned_weights_merges_what_the_view_learned_over(tmp_path, bert_family, method, params):
    base, tunes = bert_family
    view = view_over(base, tunes, method, params)
    spec = sparsified_spec(learned_spec(view, str(base), [str(t) for t in tunes], seed=3), method, params)
    assert spec["method"] == method and spec["params"] == params and len(spec["overrides"]) == len(view.names)
    written = Checkpoint.open(merge(spec, tmp_path / "out").out)
    with torch.no_grad():
        expected = view.merged_parameters()
    for name in view.names:
        torch.testing.assert_close(written.read(name), expected[name], rtol=1e-5, atol=1e-6)
    # the view learned over pre-processed vectors, not the raw ones
    raw = task_vectors(base, tunes)
    assert any(not torch.equal(view.delta_0[t], raw[t][view.names[0]]) for t in range(len(tunes)))


def test_ties_pre_processing_is_adamerging_plus_plus():
    vectors = [{"w": torch.randn(30, 7, generator=torch.Generator().manual_seed(t))} for t in range(3)]
    ours = sparsified_vectors(vectors, "ties", {"density": 0.2, "normalize": "none"}, seed=0)
    for t, theirs in enumerate(ties_vectors(vectors, 0.2)):
        torch.testing.assert_close(ours[t]["w"], theirs["w"])


@pytest.mark.parametrize("method, params", [("task_arithmetic", {"normalize": True}), ("tsv", {}),
                                            ("ties", {"density": 0.3, "normalize": "weights"})])
def test_a_method_not_linear_in_its_weights_is_refused_naming_it_and_the_tensor(method, params):
    vectors = [{"layer.0.w": torch.randn(12, 10, generator=torch.Generator().manual_seed(t))} for t in range(3)]
    view = sparsified_vectors(vectors, method, params, seed=0)
    with pytest.raises(UsageError, match=rf"--sparsify {method}: its merge of tensor 'layer.0.w' is not"):
        view[0]["layer.0.w"]


def test_a_sparsifier_that_is_not_a_plain_delta_method_or_has_bad_parameters_is_a_typed_error():
    with pytest.raises(UsageError, match="delta-space method that needs no statistics"):
        check_sparsifier("slerp", {})
    with pytest.raises(UsageError, match="delta-space method that needs no statistics"):
        check_sparsifier("regmean", {})
    with pytest.raises(SpecError, match="density"):
        check_sparsifier("dare_linear", {"density": 2.0})
