"""Checkpoint reading (safetensors single/sharded, .bin with weights_only) and the streaming writer."""
import pytest
import torch
from safetensors.torch import load_file

from taskfuse import merge
from taskfuse.io.checkpoint import Checkpoint
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
    bins = []
    for src in [base, *tunes]:
        ck = Checkpoint.open(src)
        d = tmp_path / src.name
        d.mkdir()
        torch.save({n: ck.read(n) for n in ck.tensors}, d / "pytorch_model.bin")
        (d / "config.json").write_text((src / "config.json").read_text())
        bins.append(d)
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


def test_adapter_directory_is_refused_clearly(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(Exception, match="PEFT adapter"):
        Checkpoint.open(tmp_path)
