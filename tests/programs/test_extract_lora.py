"""`taskfuse extract-lora`: a PEFT adapter from a full fine-tune that PEFT loads and that reproduces the fine-tune."""
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from taskfuse import api
from taskfuse.errors import IncompatibleInputsError, OutputExistsError, UsageError
from taskfuse.programs.extract_lora import RankRule, extract_lora
from taskfuse.testing.checkpoints import build_model, perturb, save
from tests.cli.test_user_errors import assert_user_error, taskfuse


def peft_outputs(base_dir, adapter_dir, ids, arch):
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM
    cls = AutoModelForCausalLM if arch == "llama" else AutoModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(cls.from_pretrained(base_dir), adapter_dir).eval()
    with torch.no_grad():
        return model(input_ids=ids)[0]


def outputs(model_dir, ids, arch):
    from transformers import AutoModel, AutoModelForCausalLM
    cls = AutoModelForCausalLM if arch == "llama" else AutoModel
    with torch.no_grad():
        return cls.from_pretrained(model_dir).eval()(input_ids=ids)[0]


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_full_rank_extraction_reproduces_the_fine_tune_through_peft(tmp_path, arch):
    """Every weight moved (norms, biases, embeddings too): matrices become factors, the rest is stored whole."""
    base = save(build_model(arch, 0), tmp_path / "base")
    tune = save(perturb(build_model(arch, 0), seed=5), tmp_path / "tune")
    result = extract_lora(tune, base, tmp_path / "lora", RankRule(rank=256))
    assert result.summary()["relative_error"]["max"] < 1e-5
    assert result.saved_whole  # norms (and BERT's biases) changed too
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    expected, before = outputs(tune, ids, arch), outputs(base, ids, arch)
    got = peft_outputs(base, tmp_path / "lora", ids, arch)
    assert (got - expected).abs().max() < 1e-4 < (before - expected).abs().max()
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == config["r"]


def test_a_low_rank_fine_tune_is_recovered_at_its_rank_and_energy_picks_that_rank(tmp_path):
    base_model = build_model("llama", 0)
    base = save(base_model, tmp_path / "base")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a rank-3 update of every attention projection
        for name, p in base_model.named_parameters():
            if "self_attn" in name:
                p.add_(torch.randn(p.shape[0], 3, generator=g) @ torch.randn(3, p.shape[1], generator=g) * 0.05)
    tune = save(base_model, tmp_path / "tune")
    fixed = extract_lora(tune, base, tmp_path / "r3", RankRule(rank=3))
    by_energy = extract_lora(tune, base, tmp_path / "e", RankRule(energy=0.999999))
    assert fixed.summary()["relative_error"]["max"] < 1e-4
    assert {m.rank for m in by_energy.modules} == {3}
    assert not fixed.saved_whole and fixed.unchanged > 0
    two = extract_lora(tune, base, tmp_path / "r2", RankRule(rank=2))
    for module in two.modules:  # dropping one of three directions: the error is what the singular values say
        assert 0.05 < module.relative_error < 1 and module.energy_kept < 1
    report = json.loads((tmp_path / "r2" / "taskfuse_extraction.json").read_text())
    assert report["summary"]["rank"] == {"min": 2, "max": 2} and len(report["modules"]) == len(two.modules)


def test_an_extracted_adapter_merges_back_through_taskfuse(tmp_path, llama_family):
    base, tunes = llama_family
    extract_lora(tunes[0], base, tmp_path / "lora", RankRule(rank=256))
    api.merge({"method": "task_arithmetic", "base": str(base), "models": [{"path": str(tmp_path / "lora")}],
               "dtype": "float32"}, tmp_path / "back")
    back = load_file(tmp_path / "back" / next(p.name for p in (tmp_path / "back").glob("*.safetensors")))
    from taskfuse.io.checkpoint import Checkpoint
    original = Checkpoint.open(tunes[0])
    for name, tensor in back.items():
        torch.testing.assert_close(tensor, original.read(name).float(), rtol=0, atol=1e-5, msg=name)


def test_a_buffer_only_the_base_has_is_left_to_the_base(tmp_path):
    """The benchmark's base MiniLM carries embeddings.position_ids; fine-tunes saved by transformers 5 do not."""
    from safetensors.torch import load_file, save_file
    base = save(build_model("bert", 0), tmp_path / "base")
    tune = save(perturb(build_model("bert", 0), seed=5), tmp_path / "tune")
    tensors = load_file(base / "model.safetensors")
    tensors["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    assert extract_lora(tune, base, tmp_path / "lora", RankRule(rank=4)).modules
    # a bare encoder's adapter is PEFT's FEATURE_EXTRACTION, which AutoPeftModelForFeatureExtraction loads
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["task_type"] == "FEATURE_EXTRACTION"


def test_bad_requests_are_typed_and_write_nothing(tmp_path, llama_family, bert_family):
    base, tunes = llama_family
    with pytest.raises(UsageError, match="exactly one of --rank"):
        RankRule(rank=4, energy=0.9)
    with pytest.raises(UsageError, match="--energy 1.5"):
        RankRule(energy=1.5)
    with pytest.raises(IncompatibleInputsError, match="is not a fine-tune of base"):
        extract_lora(tunes[0], bert_family[0], tmp_path / "x", RankRule(rank=4))
    with pytest.raises(IncompatibleInputsError, match="identical to the base"):
        extract_lora(base, base, tmp_path / "x", RankRule(rank=4))
    assert not (tmp_path / "x").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        extract_lora(tunes[0], base, tmp_path / "mine", RankRule(rank=4))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_command_line(tmp_path, llama_family):
    base, tunes = llama_family
    done = taskfuse("extract-lora", tunes[1], "--base", base, "--energy", "0.5", "-o", tmp_path / "cli")
    assert done.returncode == 0, done.stderr
    assert "LoRA modules" in done.stderr and (tmp_path / "cli" / "adapter_model.safetensors").exists()
    assert f"load it with AutoPeftModelForCausalLM.from_pretrained('{tmp_path / 'cli'}')" in done.stderr
    assert_user_error(taskfuse("extract-lora", tunes[1], "--base", base, "-o", tmp_path / "none"),
                      "give exactly one of --rank")
