"""mergekit-moe configs read by `taskfuse moe`: translated into taskfuse's MoE spec (the same MoE as the spec written
by hand), and every part taskfuse has no counterpart for refused with the key named, before anything is written."""
import pytest
import yaml
from safetensors.torch import load_file

from taskfuse.cli.main import app
from taskfuse.errors import SpecError
from taskfuse.programs.moe import load_moe_spec, upcycle
from taskfuse.programs.moe_source import read_moe_spec
from taskfuse.spec.mergekit_moe import is_mergekit_moe, translate_mergekit_moe

PROMPTS = ["The cat sat on the mat and purred.", "SELECT name FROM users WHERE id = 42;"]


@pytest.fixture
def family(moe_family):
    base, experts = moe_family
    return base, experts[:2]


def mergekit_moe(base, experts, **extra) -> dict:
    return {"base_model": str(base), "gate_mode": "hidden", "dtype": "float32", "experts_per_token": 1,
            "experts": [{"source_model": str(e), "positive_prompts": [p]} for e, p in zip(experts, PROMPTS)],
            **extra}


def write(tmp_path, cfg) -> str:
    path = tmp_path / "moe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def tensors(folder):
    return load_file(str(next(folder.glob("*.safetensors"))))


def test_a_mergekit_moe_config_writes_the_moe_its_taskfuse_spec_writes(family, tmp_path):
    base, experts = family
    cfg = mergekit_moe(base, experts)
    cfg["experts"][1]["negative_prompts"] = [PROMPTS[0]]
    assert is_mergekit_moe(cfg) and not is_mergekit_moe({"base": str(base), "experts": [{"path": str(base)}]})
    upcycle(read_moe_spec(write(tmp_path, cfg)), tmp_path / "from-mergekit")
    by_hand = load_moe_spec({"base": str(base), "dtype": "float32", "experts_per_token": 1, "router_init": "hidden",
                             "experts": [{"path": str(experts[0]), "positive_prompts": [PROMPTS[0]]},
                                         {"path": str(experts[1]), "positive_prompts": [PROMPTS[1]],
                                          "negative_prompts": [PROMPTS[0]]}]})
    upcycle(by_hand, tmp_path / "by-hand")
    ours, theirs = tensors(tmp_path / "from-mergekit"), tensors(tmp_path / "by-hand")
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)
    assert "model.layers.0.block_sparse_moe.gate.weight" in ours
    saved = yaml.safe_load((tmp_path / "from-mergekit" / "taskfuse_moe.yaml").read_text())
    assert saved["router_init"] == "hidden" and saved["experts"][0]["path"] == str(experts[0])


@pytest.mark.parametrize("gate_mode, router_init", [("hidden_avg", "hidden"), ("hidden_last", "hidden"),
                                                    ("random", "random"), ("uniform_random", "random")])
def test_gate_modes_map_to_taskfuses_router_initialisations(family, gate_mode, router_init):
    base, experts = family
    assert translate_mergekit_moe(mergekit_moe(base, experts, gate_mode=gate_mode), "m.yaml")["router_init"] == \
        router_init


def test_the_architecture_must_be_the_one_of_the_bases_family(family):
    base, experts = family
    assert translate_mergekit_moe(mergekit_moe(base, experts, architecture="mixtral"), "m.yaml")["base"] == str(base)
    with pytest.raises(SpecError, match=r"architecture 'qwen' \(Qwen MoE, Qwen3 MoE\).*'llama' model: Mixtral"):
        translate_mergekit_moe(mergekit_moe(base, experts, architecture="qwen"), "m.yaml")


def test_what_taskfuse_has_no_counterpart_for_is_refused_all_at_once(family):
    base, experts = family
    cfg = mergekit_moe(base, experts, gate_mode="cheap_embed", tokenizer_source="base",
                       shared_experts=[{"source_model": str(base), "positive_prompts": ["x"]}])
    cfg["experts"][0]["residual_scale"] = 0.5
    cfg["experts"][1]["positive_prompts"] = []
    cfg["experts"][1]["noise_scale"] = 0.1
    with pytest.raises(SpecError) as e:
        translate_mergekit_moe(cfg, "m.yaml")
    message = str(e.value)
    assert message.startswith("m.yaml: mergekit-moe config (6 problems)")
    for part in ("'tokenizer_source' is not one of mergekit-moe's", "gate_mode 'cheap_embed'", "shared_experts:",
                 "experts[0].residual_scale", "experts[1]: no positive_prompts", "experts[1].noise_scale"):
        assert part in message, part


def test_the_checks_after_translation_name_the_file(family, tmp_path):
    base, experts = family
    path = write(tmp_path, mergekit_moe(base, experts, experts_per_token=3))
    with pytest.raises(SpecError, match=r"MoE spec .*moe\.yaml \(translated from mergekit-moe\): experts_per_token 3"):
        read_moe_spec(path)


def test_the_moe_command_takes_a_mergekit_moe_config(family, tmp_path):
    from typer.testing import CliRunner

    base, experts = family
    path = write(tmp_path, mergekit_moe(base, experts, gate_mode="random"))
    result = CliRunner().invoke(app, ["moe", path, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "routers from random" in result.output and (tmp_path / "out" / "config.json").exists()
    bad = write(tmp_path, mergekit_moe(base, experts, gate_mode="cheap_embed"))
    result = CliRunner().invoke(app, ["moe", bad, "-o", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "cheap_embed" in result.output and not (tmp_path / "bad").exists()
