"""PEFT LoRA adapters as models in a spec: merged by their weight updates ΔW = scaling·B·A, checked against PEFT."""
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from taskfuse import api
from taskfuse.errors import AdapterError, CheckpointError
from taskfuse.io.checkpoint import Checkpoint
from taskfuse.testing.checkpoints import build_model, save

TARGETS = ["q_proj", "v_proj", "down_proj", "embed_tokens"]


def make_adapter(base_dir, out, seed, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    config = LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "init_lora_weights": False, **lora})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
        with torch.no_grad():  # B starts at zero in PEFT's default init; make every factor count
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * 0.05)
        model.save_pretrained(out)
    return out


def peft_merged(base_dir, adapter_dir) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
        return {k: v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}


def merged(tmp_path, base, models, weights, name="out", method="task_arithmetic"):
    spec = {"method": method, "base": str(base),
            "models": [{"path": str(m), "weight": w} for m, w in zip(models, weights)]}
    out = tmp_path / name
    api.merge(spec, out)
    return load_file(out / "model.safetensors")


def deltas(base_dir, adapter_dir) -> dict[str, torch.Tensor]:
    base = load_file(base_dir / "model.safetensors")
    return {k: v - base[k] for k, v in peft_merged(base_dir, adapter_dir).items() if k in base}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base = save(build_model("llama", 0), root / "base")
    return {
        "root": root,
        "base": base,
        "plain": make_adapter(base, root / "plain", 1, modules_to_save=["lm_head"]),
        "twin": make_adapter(base, root / "twin", 6),
        "other": make_adapter(base, root / "other", 2, r=2, lora_alpha=3),
        "rslora": make_adapter(base, root / "rslora", 3, use_rslora=True, r=8, lora_alpha=4),
        "patterns": make_adapter(base, root / "patterns", 4, rank_pattern={"layers.1.self_attn.q_proj": 2},
                                 alpha_pattern={"down_proj": 32}),
        "dora": make_adapter(base, root / "dora", 5, use_dora=True, target_modules=["q_proj", "v_proj"]),
    }


@pytest.mark.parametrize("kind", ["plain", "rslora", "patterns", "dora"])
def test_one_adapter_at_weight_one_is_peft_merge_and_unload(tmp_path, family, kind):
    ours = merged(tmp_path, family["base"], [family[kind]], [1.0])
    reference = peft_merged(family["base"], family[kind])
    assert set(ours) == set(reference)
    base = load_file(family["base"] / "model.safetensors")
    changed = [k for k in ours if not torch.equal(reference[k], base[k])]
    assert len(changed) >= 6  # the adapter really moved the weights it targets
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=2e-6, msg=name)


def test_a_linear_merge_is_the_sum_of_the_updates_where_peft_factor_sums_are_not(tmp_path, family):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base_dir, a, b = family["base"], family["plain"], family["patterns"]
    ours = merged(tmp_path, base_dir, [a, b], [0.7, 0.5])
    base = load_file(base_dir / "model.safetensors")
    da, db = deltas(base_dir, a), deltas(base_dir, b)
    exact = {k: base[k] + 0.7 * da[k] + 0.5 * db[k] for k in base}
    for name in ours:
        torch.testing.assert_close(ours[name], exact[name], rtol=0, atol=2e-6, msg=name)
    # PEFT's own "linear" combination refuses mixed ranks, and on equal ranks sums the factors: (ΣwA)(ΣwB) carries
    # the cross terms B_a·A_b
    b = family["twin"]
    ours = merged(tmp_path, base_dir, [a, b], [0.7, 0.5], name="equal_ranks")
    db = deltas(base_dir, b)
    exact = {k: base[k] + 0.7 * da[k] + 0.5 * db[k] for k in base}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), a, adapter_name="a")
        model.load_adapter(b, adapter_name="b")
        model.add_weighted_adapter(["a", "b"], [0.7, 0.5], "mix", combination_type="linear")
        model.set_adapter("mix")
        theirs = model.merge_and_unload().state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (theirs[q] - exact[q]).abs().max() > 100 * (ours[q] - exact[q]).abs().max()


def test_negative_weights_subtract_an_update(tmp_path, family):
    base_dir, a, b = family["base"], family["plain"], family["other"]
    ours = merged(tmp_path, base_dir, [a, b], [1.0, -1.0])
    base = load_file(base_dir / "model.safetensors")
    da, db = deltas(base_dir, a), deltas(base_dir, b)
    for name in ("model.layers.0.self_attn.v_proj.weight", "model.embed_tokens.weight"):
        torch.testing.assert_close(ours[name], base[name] + da[name] - db[name], rtol=0, atol=2e-6)


def test_adapters_mix_with_full_fine_tunes_and_ties_reads_their_updates(tmp_path, family):
    from taskfuse.testing.checkpoints import perturb
    full = save(perturb(build_model("llama", 0), seed=9), tmp_path / "full")
    out = merged(tmp_path, family["base"], [family["plain"], full], [1.0, 1.0], method="ties")
    assert out["model.layers.0.self_attn.q_proj.weight"].isfinite().all()


def test_base_plus_adapter_names_a_base_the_adapter_config_does_not(tmp_path, family):
    moved = tmp_path / "moved_adapter"
    moved.mkdir()
    for f in family["other"].iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="BASE\\+ADAPTER"):
        Checkpoint.open(str(moved))
    ckpt = Checkpoint.open(f"{family['base']}+{moved}")
    q = "model.layers.2.self_attn.q_proj.weight"
    torch.testing.assert_close(ckpt.read(q), peft_merged(family["base"], family["other"])[q], rtol=0, atol=2e-6)
    assert ckpt.read("model.norm.weight").dtype == torch.float32  # untouched tensors are the base's


def test_an_adapter_for_another_base_is_refused_naming_module_and_shapes(tmp_path, family):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    other_base = save(LlamaForCausalLM(config), tmp_path / "other_base")
    with pytest.raises(AdapterError, match=r"q_proj.*(B·A|base tensor).*\nFix|different base") as e:
        api.plan({"method": "task_arithmetic", "base": str(other_base),
                  "models": [{"path": f"{other_base}+{family['plain']}"}]})
    assert str(family["plain"]) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_module_the_base_lacks_is_named(tmp_path, family):
    from transformers import BertConfig, BertModel
    bert = save(BertModel(BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=96)), tmp_path / "bert")
    with pytest.raises(AdapterError, match=r"module 'model\.layers\.0\.self_attn\.q_proj' has no weight"):
        Checkpoint.open(f"{bert}+{family['plain']}")


def test_unknown_peft_types_and_variants_are_refused(tmp_path, family):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ia3 = get_peft_model(AutoModelForCausalLM.from_pretrained(family["base"]),
                             IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]))
        ia3.save_pretrained(tmp_path / "ia3")
    with pytest.raises(AdapterError, match="PEFT type 'IA3' is not supported"):
        Checkpoint.open(str(tmp_path / "ia3"))
    biased = make_adapter(family["base"], tmp_path / "biased", 7, lora_bias=True, target_modules=["q_proj"])
    with pytest.raises(AdapterError, match="lora_bias"):
        Checkpoint.open(str(biased))
    not_adapter = tmp_path / "empty"
    not_adapter.mkdir()
    with pytest.raises(CheckpointError, match="not a PEFT adapter directory"):
        Checkpoint.open(f"{family['base']}+{not_adapter}")


def test_a_mergekit_recipe_takes_model_plus_lora(tmp_path, family):
    base_dir = family["base"]
    recipe = {"merge_method": "task_arithmetic", "base_model": str(base_dir),
              "models": [{"model": f"{base_dir}+{family['other']}", "parameters": {"weight": 1.0}}]}
    out = tmp_path / "mk"
    api.merge(recipe, out)
    reference = peft_merged(base_dir, family["other"])
    ours = load_file(out / "model.safetensors")
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=2e-6, msg=name)


def test_a_linear_merge_of_adapters_is_written_as_an_exact_adapter(tmp_path, family):
    from taskfuse.programs.merge_to_adapter import merge_to_adapter
    base_dir = family["base"]
    spec = {"method": "task_arithmetic", "base": str(base_dir), "params": {"scale": 0.8},
            "models": [{"path": str(family["plain"]), "weight": 0.7}, {"path": str(family["patterns"]), "weight": -0.5}]}
    report = merge_to_adapter(spec, tmp_path / "adapter")
    assert report["exact"]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    q1 = "model.layers.1.self_attn.q_proj"
    assert report["ranks"][q1] == 4 + 2 and config["rank_pattern"].get(q1, config["r"]) == 6
    api.merge(spec, tmp_path / "full")
    expected = load_file(tmp_path / "full" / "model.safetensors")
    got = peft_merged(base_dir, tmp_path / "adapter")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=3e-6, msg=name)


def test_written_adapters_name_their_task_type_so_peft_auto_classes_load_them(tmp_path, family):
    """PEFT's AutoPeftModelForCausalLM picks the model class from the config's task type (or, for an adapter of
    none, the auto_mapping PEFT records): an adapter with neither is refused ("Cannot infer the auto class")."""
    from peft import AutoPeftModelForCausalLM

    from taskfuse.programs.extract_lora import RankRule, extract_lora
    from taskfuse.programs.merge_to_adapter import merge_to_adapter
    base_dir = family["base"]
    # "twin" names no task type (PEFT writes auto_mapping instead); "typed" says CAUSAL_LM
    typed = make_adapter(base_dir, tmp_path / "typed", 7, task_type="CAUSAL_LM")
    assert json.loads((family["twin"] / "adapter_config.json").read_text())["task_type"] is None
    spec = {"method": "task_arithmetic", "base": str(base_dir),
            "models": [{"path": str(family["twin"])}, {"path": str(typed)}]}
    merge_to_adapter(spec, tmp_path / "exact")
    merge_to_adapter({**spec, "method": "ties"}, tmp_path / "svd", RankRule(rank=64))
    api.merge(spec, tmp_path / "full")
    extract_lora(tmp_path / "full", base_dir, tmp_path / "extracted", RankRule(rank=64))
    tokens = torch.randint(0, 100, (2, 7))
    from transformers import AutoModelForCausalLM
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(tmp_path / "full")(tokens).logits
    for name in ("exact", "svd", "extracted"):
        assert json.loads((tmp_path / name / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
        model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / name)
        if name != "svd":  # ties is another merge: its adapter is checked against its own full merge above
            with torch.no_grad():
                torch.testing.assert_close(model(tokens).logits, expected, atol=1e-4, rtol=1e-4, msg=name)
    # an adapter of a class no PEFT task type loads (a masked LM): the output records the base's class as PEFT's
    # auto_mapping, which PEFT's generic AutoPeftModel reads
    from peft import AutoPeftModel, LoraConfig, get_peft_model
    from transformers import BertForMaskedLM
    from taskfuse.testing.checkpoints import tiny_config
    masked = save(BertForMaskedLM(tiny_config("bert", 128, False)), tmp_path / "masked")
    get_peft_model(BertForMaskedLM.from_pretrained(masked), LoraConfig(r=2, target_modules=["query"],
                                                                       init_lora_weights=False)).save_pretrained(
        tmp_path / "masked_lora")
    merge_to_adapter({"method": "task_arithmetic", "base": str(masked),
                      "models": [{"path": str(tmp_path / "masked_lora")}]}, tmp_path / "masked_merged")
    written = json.loads((tmp_path / "masked_merged" / "adapter_config.json").read_text())
    assert written["task_type"] is None and written["auto_mapping"]["base_model_class"] == "BertForMaskedLM"
    assert type(AutoPeftModel.from_pretrained(tmp_path / "masked_merged").base_model.model) is BertForMaskedLM


def test_other_merges_become_adapters_by_truncated_svd_or_are_refused(tmp_path, family):
    from taskfuse.errors import UsageError
    from taskfuse.programs.extract_lora import RankRule
    from taskfuse.programs.merge_to_adapter import merge_to_adapter
    base_dir = family["base"]
    spec = {"method": "ties", "base": str(base_dir), "params": {"density": 0.5},
            "models": [{"path": str(family["plain"])}, {"path": str(family["twin"])}]}
    with pytest.raises(UsageError, match=r"(?s)not a sum of LoRA updates.*'ties'.*--rank"):
        merge_to_adapter(spec, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    report = merge_to_adapter(spec, tmp_path / "svd", RankRule(rank=64))
    assert not report["exact"] and report["summary"]["relative_error"]["max"] < 1e-5
    api.merge(spec, tmp_path / "full")
    expected = load_file(tmp_path / "full" / "model.safetensors")
    got = peft_merged(base_dir, tmp_path / "svd")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=3e-6, msg=name)
    assert not list(tmp_path.glob(".svd*"))  # the intermediate full merge is gone


def test_merge_as_adapter_on_the_command_line(tmp_path, family):
    import yaml
    from tests.cli.test_user_errors import assert_user_error, taskfuse
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": str(family["base"]),
                                    "models": [{"path": str(family["plain"])}, {"path": str(family["twin"])}]}))
    done = taskfuse("merge", spec, "-o", tmp_path / "a", "--as-adapter")
    assert done.returncode == 0, done.stderr
    assert "exact" in done.stderr and (tmp_path / "a" / "taskfuse_adapter.json").exists()
    assert f"load it with AutoPeftModelForCausalLM.from_pretrained('{tmp_path / 'a'}')" in done.stderr
    # a dry run plans and writes nothing; a GGUF is a full model's format, not an adapter's
    dry = taskfuse("merge", spec, "-o", tmp_path / "dry", "--as-adapter", "--rank", "4", "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stderr and "rank 4" in dry.stderr, dry.stderr
    assert not (tmp_path / "dry").exists()
    assert_user_error(taskfuse("merge", spec, "-o", tmp_path / "gguf", "--as-adapter", "--format", "gguf"),
                      "--format gguf writes a full model")
    assert not (tmp_path / "gguf").exists()
    # the adapter output merges on the CPU in one pass: a device or thread count asked for is refused, not dropped
    assert_user_error(taskfuse("merge", spec, "-o", tmp_path / "gpu", "--as-adapter", "--device", "cuda",
                               "--threads", "2"),
                      "--device cuda, --threads 2 have no effect on a PEFT adapter", "Fix: drop them")
    assert not (tmp_path / "gpu").exists()
    ties = tmp_path / "ties.yaml"
    ties.write_text(spec.read_text().replace("task_arithmetic", "ties"))
    assert_user_error(taskfuse("merge", ties, "-o", tmp_path / "b", "--as-adapter"), "--rank R or --energy E")
    assert not (tmp_path / "b").exists()


def test_a_mergekit_config_of_merged_slices_over_adapters_is_checked_for_depth_on_the_command_line(tmp_path, family):
    """The exact adapter route plans without the full merge's checks: the CLI checks the slices' depth first."""
    import yaml
    from tests.cli.test_user_errors import assert_user_error, taskfuse

    def recipe(end: int):
        spec = tmp_path / f"slices-{end}.yaml"
        spec.write_text(yaml.safe_dump({
            "merge_method": "task_arithmetic", "base_model": str(family["base"]),
            "slices": [{"sources": [{"model": str(family[m]), "layer_range": [0, end], "parameters": {"weight": 0.5}}
                                    for m in ("plain", "twin")]}]}))
        return spec
    for extra in ([], ["--dry-run"]):
        assert_user_error(taskfuse("merge", recipe(2), "-o", tmp_path / "short", "--as-adapter", *extra),
                          "cover layers 0-1 (2 layers)", "have 3")
        assert not (tmp_path / "short").exists()
    done = taskfuse("merge", recipe(3), "-o", tmp_path / "whole", "--as-adapter")
    assert done.returncode == 0 and "exact" in done.stderr, done.stderr
