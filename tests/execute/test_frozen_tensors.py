"""A tensor that no fine-tune changed comes out as the base (the executor skips the method for it), for every
delta-space method, while the tensors the fine-tunes changed are merged."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from taskfuse import api
from taskfuse.methods import all_methods, get_method

DELTA = [m.name for m in all_methods() if m.space == "delta"]


@pytest.mark.parametrize("method", DELTA)
def test_untouched_tensor_equals_base_and_touched_one_is_merged(bert_family, tmp_path, method):
    base, tunes = bert_family
    name = "embeddings.word_embeddings.weight"
    models = []
    for i, tune in enumerate(tunes):  # copies of the fine-tunes whose embedding table is the base's
        tensors = load_file(tune / "model.safetensors")
        tensors[name] = load_file(base / "model.safetensors")[name].clone()
        folder = tmp_path / f"ft{i}"
        folder.mkdir()
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text((tune / "config.json").read_text())
        models.append(folder)
    models = models[:get_method(method).max_models]  # a method of one model (nearswap) takes the first
    spec = {"method": method, "base": str(base), "models": [{"path": str(m)} for m in models]}
    out = api.merge(spec, tmp_path / "out").out
    merged, original = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert torch.equal(merged[name], original[name])
    moved = [k for k in merged if merged[k].is_floating_point() and not torch.equal(merged[k], original[k])]
    assert moved, f"{method}: the tensors the fine-tunes changed should be merged, not copied"
