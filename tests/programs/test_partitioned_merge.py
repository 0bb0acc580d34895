"""aTLAS×K written as a spec: the registered partitioned_task_arithmetic method replays a partitioned view."""
import pytest
import torch
import yaml
from transformers import AutoModel

from taskfuse import merge
from taskfuse.errors import SpecError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.methods import Inputs, get_method
from taskfuse.methods.partitioned import partition_index
from taskfuse.programs.learned_spec import learned_spec
from taskfuse.programs.merge_view import MergeView, Parameterization
from taskfuse.programs.partition_spec import partition_means, partition_spec
from tests.programs.test_merge_view import IDS, task_vectors


def partitioned_view(base, tunes, k, seed=0):
    view = MergeView(AutoModel.from_pretrained(base).eval(), task_vectors(base, tunes),
                     Parameterization("partition", k, seed))
    with torch.no_grad():  # every coefficient different, some negative: a wrong partition would show
        view.coefficients.copy_(torch.randn(view.coefficients.shape, generator=torch.Generator().manual_seed(3)))
    return view


def test_the_engine_writes_what_the_partitioned_view_computes(tmp_path, bert_family):
    base, tunes = bert_family
    view = partitioned_view(base, tunes, 3, seed=5)
    spec = partition_spec(view, str(base), [str(t) for t in tunes], dtype="float32")
    assert spec["method"] == "partitioned_task_arithmetic" and spec["params"] == {"partitions": 3, "partition_seed": 5}
    written = merge(spec, tmp_path / "merged").out
    merged = Checkpoint.open(written)
    with torch.no_grad():
        expected = view.merged_parameters()
        for name in view.names:
            torch.testing.assert_close(merged.read(name), expected[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(AutoModel.from_pretrained(written).eval()(input_ids=IDS).last_hidden_state,
                                   view(input_ids=IDS).last_hidden_state, rtol=1e-4, atol=1e-5)
    # through YAML (the spec a user replays) the model indices come back as keys and the merge is the same bytes
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    again = merge(yaml.safe_load((tmp_path / "spec.yaml").read_text()), tmp_path / "again").out
    assert (again / "model.safetensors").read_bytes() == (written / "model.safetensors").read_bytes()


def test_one_partition_per_tensor_is_the_layer_wise_merge(tmp_path, bert_family):
    base, tunes = bert_family
    view = partitioned_view(base, tunes, 1)
    layer = MergeView(AutoModel.from_pretrained(base).eval(), task_vectors(base, tunes), Parameterization("layer"))
    with torch.no_grad():
        layer.coefficients.copy_(view.coefficients[..., 0])
    assert partition_means(view) == layer.tensor_weights()
    ours = Checkpoint.open(merge(partition_spec(view, str(base), [str(t) for t in tunes]), tmp_path / "k1").out)
    theirs = Checkpoint.open(merge(learned_spec(layer, str(base), [str(t) for t in tunes]), tmp_path / "layer").out)
    for name in view.names:
        torch.testing.assert_close(ours.read(name), theirs.read(name), rtol=1e-6, atol=1e-7)


def test_the_methods_partitions_are_the_views(bert_family):
    base, tunes = bert_family
    view = partitioned_view(base, tunes, 7, seed=11)
    shapes = dict(view.base.named_parameters())
    for i, name in enumerate(view.names):
        assert torch.equal(view.partition(i), partition_index(11, name, shapes[name].shape, 7).long())


def test_without_coefficients_it_is_weighted_task_arithmetic_and_weights_scale_the_partitions():
    stack = torch.randn(3, 40, 6)
    weights = torch.tensor([0.5, -1.0, 2.0])
    info = get_method("partitioned_task_arithmetic")
    x = Inputs.of(stack, weights, key="layer.0.w")
    torch.testing.assert_close(info.fn(x, info.make_params({"partitions": 4})), (weights[:, None, None] * stack).sum(0))
    ones = {t: [1.0] * 4 for t in range(3)}
    torch.testing.assert_close(info.fn(x, info.make_params({"partitions": 4, "coefficients": ones})),
                               (weights[:, None, None] * stack).sum(0))
    scaled = {0: [1.0, 0.0, 0.0, 0.0], 1: [0.0] * 4, 2: [0.0] * 4}  # model 0's first partition alone
    part = partition_index(0, "layer.0.w", (40, 6), 4)
    torch.testing.assert_close(info.fn(x, info.make_params({"partitions": 4, "coefficients": scaled})),
                               0.5 * stack[0] * (part == 0))


def test_coefficients_of_the_wrong_shape_name_the_tensor_and_write_nothing(tmp_path, bert_family):
    base, tunes = bert_family
    view = partitioned_view(base, tunes, 2)
    spec = partition_spec(view, str(base), [str(t) for t in tunes])
    name = view.names[0]
    spec["overrides"][0]["params"]["coefficients"] = {0: [1.0, 2.0, 3.0], 1: [1.0, 2.0]}
    with pytest.raises(SpecError, match=rf"tensor '{name}'.*need models 0..1 with 2 each"):
        merge(spec, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    spec["overrides"][0]["params"]["coefficients"] = {0: [1.0, 2.0]}  # model 1 missing
    with pytest.raises(SpecError, match="for every model"):
        merge(spec, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    spec["params"]["partitions"] = 0
    with pytest.raises(SpecError, match="partitions"):
        merge(spec, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
