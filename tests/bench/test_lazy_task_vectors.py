"""Task vectors read tensor by tensor (programs/lazy_task_vectors.py) must give the view that whole task vectors in
dicts give, to the bit: then the learned rows can be built from them without their numbers moving."""
import pytest
import torch

from taskfuse.bench.learned import learned_method
from taskfuse.eval.encoder import load_encoder
from taskfuse.programs.lazy_task_vectors import FileTaskVector, ties_trimmed
from taskfuse.programs.merge_view import MergeView
from taskfuse.programs.slerp_view import SlerpView
from taskfuse.programs.sparsify import ties_vectors


def whole_vectors(zoo, theta0):
    """Each expert's whole task vector in a dict: how the view was fed before."""
    vectors = []
    for expert in zoo.experts.values():
        tuned = load_encoder(expert.model_dir).state_dict()
        vectors.append({n: tuned[n] - theta0[n] for n in theta0 if n in tuned and theta0[n].is_floating_point()})
    return vectors


def read_on_demand(zoo, theta0):
    return [FileTaskVector(expert.model_dir, theta0) for expert in zoo.experts.values()]


def view(method, zoo, vectors_of):
    """The view a learned row of the benchmark trains, fed with `vectors_of`'s task vectors."""
    base = load_encoder(zoo.base_dir)
    vectors = vectors_of(zoo, base.state_dict())
    if method.ties_density is not None:
        vectors = (ties_vectors if vectors_of is whole_vectors else ties_trimmed)(vectors, method.ties_density)
    if method.interpolation == "slerp":
        return SlerpView(base, vectors, scale=method.init)
    return MergeView(base, vectors, method.parameterization, method.init)


def buffers(view):
    return {name: b for name, b in view.named_buffers() if not name.startswith("base.")}


@pytest.mark.parametrize("name", ["adamerging_layer", "adamerging_layer_ties", "self_positioning"])
def test_the_view_from_vectors_read_tensor_by_tensor_is_the_view_from_whole_vectors(tiny_zoo, name):
    method = learned_method(name)
    lazy, eager = (view(method, tiny_zoo, vectors) for vectors in (read_on_demand, whole_vectors))
    assert lazy.names == eager.names
    assert "embeddings.word_embeddings.weight" not in lazy.names  # frozen while fine-tuning: no coefficient
    got, want = buffers(lazy), buffers(eager)
    assert got.keys() == want.keys() and len(got) >= len(lazy.names)
    different = [n for n in want if not torch.equal(got[n], want[n])]
    assert not different, different[:5]
    assert torch.equal(lazy.coefficients, eager.coefficients)


def test_a_file_task_vector_is_a_mapping_of_the_floating_point_tensors_both_models_hold(tiny_zoo):
    base = load_encoder(tiny_zoo.base_dir)
    theta0 = base.state_dict()
    expert = next(iter(tiny_zoo.experts.values()))
    vector = FileTaskVector(expert.model_dir, theta0)
    whole = whole_vectors(tiny_zoo, theta0)[0]
    assert list(vector) == list(whole) and len(vector) == len(whole)
    assert "embeddings.position_ids" not in vector  # an integer buffer is no task vector
    with pytest.raises(KeyError):
        vector["embeddings.position_ids"]
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(vector[name], whole[name]) and vector[name].abs().sum() > 0
    trimmed = ties_trimmed([vector, vector], 0.2)
    assert list(trimmed[1]) == list(vector)
    assert (trimmed[0][name] != 0).float().mean() <= 0.21  # trimmed to its top 20 % by magnitude
