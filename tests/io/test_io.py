"""Checkpoint reading (safetensors single/sharded, .bin with weights_only) and the streaming writer."""
import pytest
import torch
from safetensors.torch import load_file

from taskfuse import merge
from taskfuse.errors import CheckpointError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.testing.checkpoints import save_as_bin
from taskfuse.io.safetensors_stream import SafetensorsStreamWriter
from tests.conftest import spec_for


def test_stream_writer_round_trip(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(4),
               "d": torch.zeros(0, 2), "e": torch.tensor([True, False])}
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors",
                                     [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], {"format": "pt"})
    assert not (tmp_path / "x.safetensors").exists()  # only the .partial exists until close()
    for k, v in tensors.items():
        writer.write(k, v)
    writer.close()
    back = load_file(tmp_path / "x.safetensors")
    assert all(torch.equal(back[k], v) for k, v in tensors.items())


def test_stream_writer_rejects_out_of_order_and_aborts_cleanly(tmp_path):
    writer = SafetensorsStreamWriter(tmp_path / "y.safetensors", [("a", (2,), torch.float32)], {})
    with pytest.raises(RuntimeError, match="expected a"):
        writer.write("b", torch.zeros(2))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_pytorch_bin_checkpoints_load_with_weights_only(tmp_path, bert_family):
    base, tunes = bert_family
    bins = save_as_bin([base, *tunes], tmp_path / "bin")
    ref = merge(spec_for("ties", base, tunes), tmp_path / "from_safetensors")
    got = merge(spec_for("ties", bins[0], bins[1:]), tmp_path / "from_bin")
    a, b = Checkpoint.open(ref.out), Checkpoint.open(got.out)
    assert all(torch.equal(a.read(n), b.read(n)) for n in a.tensors)


def test_tied_embeddings_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM

    from taskfuse.testing.checkpoints import build_family

    base, tunes = build_family(tmp_path / "tied", "llama", 2, tie=True)
    assert "lm_head.weight" not in Checkpoint.open(base).tensors
    out = merge(spec_for("task_arithmetic", base, tunes), tmp_path / "o").out
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_an_adapter_directory_of_an_unknown_kind_is_refused_clearly(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="PEFT type None is not supported"):
        Checkpoint.open(tmp_path)


@pytest.mark.parametrize("repo_files, expected", [
    (["config.json", "model.safetensors", "pytorch_model.bin", "training_args.bin", "optimizer.bin"],
     {"config.json", "model.safetensors"}),
    (["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
      "pytorch_model.bin.index.json", "training_args.bin", "optimizer.bin", "rng_state.pth"],
     {"config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
      "pytorch_model-00002-of-00002.bin"}),
])
def test_hub_downloads_fetch_one_weight_format_safetensors_first(tmp_path, monkeypatch, repo_files, expected):
    # The hub is out of reach here, so a stand-in repository answers snapshot_download's allow_patterns the way
    # huggingface_hub does (fnmatch on the repository's file names).
    import fnmatch

    import huggingface_hub

    from taskfuse.io.hub import resolve_hub_id

    def snapshot_download(repo_id, allow_patterns):
        for name in repo_files:
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (tmp_path / name).write_text("x")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert {p.name for p in resolve_hub_id("org/model").iterdir()} == expected
