"""The streaming executor's output equals a naive whole-state-dict merge done in memory."""
import pytest
import torch
from safetensors.torch import load_file

from taskfuse import merge
from taskfuse.methods import get_method
from taskfuse.methods.inputs import Inputs
from tests.conftest import spec_for


def load_dir(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def oracle(method, base_dir, tune_dirs, params, weights, seed=0):
    """Whole state dicts in memory, one method call per tensor, no planner or executor involved."""
    info = get_method(method)
    base, tunes = load_dir(base_dir), [load_dir(t) for t in tune_dirs]
    p = info.params(**params)
    merged = {}
    for name, b in base.items():
        stack = torch.stack([t[name].float() for t in tunes])
        b32 = b.float()
        if info.space == "delta":
            stack = stack - b32
        out = info.fn(Inputs(stack, torch.tensor(weights), b32, name, seed), p)
        merged[name] = (b32 + out if info.space == "delta" else out).to(b.dtype)
    return merged


@pytest.mark.parametrize("method,params", [
    ("task_arithmetic", {"scale": 0.7}),
    ("ties", {"density": 0.3}),
    ("dare_ties", {"density": 0.5}),
    ("linear", {}),
    ("tsv", {}),
])
def test_streaming_equals_in_memory(tmp_path, llama_family, method, params):
    base, tunes = llama_family
    weights = [1.0, 0.6, 0.3]
    spec = spec_for(method, base, tunes, params=params, seed=0)
    for m, w in zip(spec["models"], weights):
        m["weight"] = w
    result = merge(spec, tmp_path / "out", max_shard_size="100KB")
    got = load_dir(result.out)
    want = oracle(method, base, tunes, params, weights)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == torch.bfloat16
        torch.testing.assert_close(got[name].float(), want[name].float(), atol=0, rtol=0, msg=name)


@pytest.fixture
def small_slices(monkeypatch):
    """256-entry slices, so most tensors have many and the passes of sliced methods really run on both threads."""
    import taskfuse.ops.chunks as chunks

    monkeypatch.setattr(chunks.chunk_slices, "__defaults__", (256,))


@pytest.mark.parametrize("method,params", [
    ("dare_linear", {}), ("ties", {}), ("breadcrumbs_ties", {}), ("model_stock", {}), ("task_arithmetic", {}),
    ("ram", {"r": 0.1, "epsilon": 1e-3}), ("sce", {"select_topk": 0.3, "selection": "task_vectors"}),
    ("multislerp", {}),
])
def test_result_independent_of_threads(tmp_path, llama_family, small_slices, method, params):
    base, tunes = llama_family
    spec = spec_for(method, base, tunes, params=params, seed=3)
    a = load_dir(merge(spec, tmp_path / "a", threads=1).out)
    b = load_dir(merge(spec, tmp_path / "b", threads=2).out)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method,params", [("ties", {"density": 0.3}), ("dare_ties", {"density": 0.5}),
                                           ("model_stock", {}), ("ram", {"r": 0.1, "epsilon": 1e-3})])
def test_streaming_in_small_slices_equals_in_memory(tmp_path, llama_family, small_slices, method, params):
    base, tunes = llama_family
    got = load_dir(merge(spec_for(method, base, tunes, params=params, seed=0), tmp_path / "out", threads=2).out)
    want = oracle(method, base, tunes, params, [1.0, 1.0, 1.0])
    for name in want:
        torch.testing.assert_close(got[name].float(), want[name].float(), atol=0, rtol=0, msg=name)


def test_mapped_inputs_merge_like_read_inputs(tmp_path, llama_family, monkeypatch):
    import taskfuse.io.safetensors_pread as pread
    from taskfuse.io.checkpoint import Checkpoint

    base, tunes = llama_family
    probe = Checkpoint.open(base)
    if probe.map(next(iter(probe.tensors))) is None:
        pytest.skip("this kernel cannot prefault mappings (MADV_POPULATE_READ); inputs are read instead")
    spec = spec_for("ties", base, tunes, params={"density": 0.4})
    mapped = load_dir(merge(spec, tmp_path / "mapped").out)
    monkeypatch.setattr(pread, "_POPULATE_READ", None)
    read = load_dir(merge(spec, tmp_path / "read").out)
    assert all(torch.equal(mapped[k], read[k]) for k in mapped)
