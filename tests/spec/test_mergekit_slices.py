"""mergekit configs whose slices merge several models (spec/mergekit_slices.py): what they plan to, and each form
taskfuse refuses with the fix. Their merges against mergekit's own are tests/methods/test_reference_mergekit.py's
*_slice(s) fixtures."""
import pytest
import torch

from taskfuse import IncompatibleInputsError, SpecError, merge, plan
from taskfuse.spec import parse_spec


def sliced(base, tune, ranges, method="slerp", parameters=None, **slice_parameters):
    slices = [{"sources": [{"model": str(m), "layer_range": list(r)} for m in (base, tune)]} for r in ranges]
    for i, params in slice_parameters.items():
        slices[int(i.removeprefix("s"))]["parameters"] = params
    return {"merge_method": method, "base_model": str(base), "slices": slices,
            "parameters": parameters or {"t": 0.5}}


def jobs_by_name(p):
    return {j.name: j for j in p.jobs}


def test_one_slice_is_the_models_form_with_the_slices_depth(llama_family):
    base, tunes = llama_family
    spec = parse_spec(sliced(base, tunes[0], [(0, 3)], parameters={"t": [0.0, 1.0]}))
    assert spec.depth == 3 and [m.path for m in spec.models] == [str(base), str(tunes[0])]
    assert spec.params["t"] == [0.0, 1.0] and not spec.overrides  # the schedule runs over the whole depth


def test_each_slice_runs_the_gradient_again_and_its_own_settings_come_first(llama_family):
    base, tunes = llama_family
    cfg = sliced(base, tunes[0], [(0, 1), (1, 2), (2, 3)], parameters={"t": [0.2, 0.6]},
                 s1={"t": [{"filter": "mlp", "value": 0.9}]})
    jobs = jobs_by_name(plan(cfg))
    assert jobs["model.layers.0.self_attn.q_proj.weight"].params["t"] == pytest.approx(0.6)  # one-layer slice: end
    assert jobs["model.layers.1.mlp.up_proj.weight"].params["t"] == pytest.approx(0.9)  # the slice's filter first
    assert jobs["model.layers.1.self_attn.q_proj.weight"].params["t"] == pytest.approx(0.6)  # then the config's
    assert jobs["model.embed_tokens.weight"].params["t"] == pytest.approx(0.2)  # outside the layers: position 0
    assert jobs["lm_head.weight"].params["t"] == pytest.approx(0.2)


def test_merged_slices_that_end_before_the_models_last_layer_are_refused_and_nothing_is_written(
        tmp_path, llama_family):
    base, tunes = llama_family
    with pytest.raises(IncompatibleInputsError, match=r"layers 0-1 \(2 layers\).*have 3.*Fix: end the last"):
        merge(sliced(base, tunes[0], [(0, 2)]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (lambda c: c["slices"][1]["sources"][1].update(layer_range=[1, 2]), r"different layer ranges.*same layer_range"),
    (lambda c: c["slices"][1]["sources"][0].update(layer_range=[1, 3]) or
     c["slices"][1]["sources"][1].update(layer_range=[1, 3]), r"should start at layer 2"),
    (lambda c: c["slices"][1]["sources"].reverse(), r"other models than slices\[0\]"),
    (lambda c: c["slices"][0].update(base_model="x"), r"slices\[0\]: key 'base_model' is not supported"),
    (lambda c: c["slices"][1].update(parameters={"t": 0.9}), r"slices\[0\] and slices\[-1\] give different settings"),
    (lambda c: c.update(merge_method="passthrough"), r"passthrough takes one source per slice"),
])
def test_slices_taskfuse_cannot_merge_layer_by_layer_are_refused_with_the_fix(llama_family, change, message):
    base, tunes = llama_family
    cfg = sliced(base, tunes[0], [(0, 2), (2, 3)])
    change(cfg)
    with pytest.raises(SpecError, match=message):
        parse_spec(cfg)


def test_a_sources_gradient_across_several_slices_is_refused(llama_family):
    base, tunes = llama_family
    cfg = sliced(base, tunes[0], [(0, 2), (2, 3)], method="ties", parameters={"lambda": 1.0})
    for sl in cfg["slices"]:
        sl["sources"][1]["parameters"] = {"weight": 1.0, "density": [0.2, 0.8]}
    with pytest.raises(SpecError, match=r"sources\[1\].parameters.density: per-layer or filtered settings"):
        parse_spec(cfg)


def test_first_matching_rule_wins_and_rules_after_a_catch_all_are_never_reached(llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "slerp", "base_model": str(base), "models": [{"model": str(base)}, {"model": str(tunes[0])}],
           "parameters": {"t": [{"filter": "q_proj", "value": 0.9}, {"filter": "self_attn", "value": 0.1},
                                {"filter": "*", "value": 0.5}, {"filter": "mlp", "value": 0.0}]}}
    jobs = jobs_by_name(plan(cfg))
    assert jobs["model.layers.0.self_attn.q_proj.weight"].params["t"] == pytest.approx(0.9)
    assert jobs["model.layers.0.self_attn.k_proj.weight"].params["t"] == pytest.approx(0.1)
    assert jobs["model.layers.0.mlp.up_proj.weight"].params["t"] == pytest.approx(0.5)


def test_a_filter_with_glob_characters_is_matched_as_text(llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "slerp", "base_model": str(base), "models": [{"model": str(base)}, {"model": str(tunes[0])}],
           "parameters": {"t": [{"filter": "[q]_proj", "value": 0.9}, {"value": 0.5}]}}
    assert jobs_by_name(plan(cfg))["model.layers.0.self_attn.q_proj.weight"].params["t"] == pytest.approx(0.5)


def test_the_configs_weight_is_each_models_that_gives_none(llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "task_arithmetic", "base_model": str(base), "parameters": {"weight": 0.3},
           "models": [{"model": str(tunes[0]), "parameters": {"weight": 1.0}}, {"model": str(tunes[1])}]}
    assert [m.weight for m in parse_spec(cfg).models] == [1.0, 0.3]


def test_a_weight_per_layer_across_several_slices_is_refused(llama_family):
    base, tunes = llama_family
    cfg = sliced(base, tunes[0], [(0, 2), (2, 3)], method="task_arithmetic", parameters={"weight": [0.1, 0.2]})
    with pytest.raises(SpecError, match=r"parameters.weight: a weight given per layer or per tensor is not supported "
                                        r"across several slices"):
        parse_spec(cfg)


def test_a_slices_filter_may_name_any_part_of_a_tensors_name_as_mergekits_filters_do(llama_family):
    base, tunes = llama_family
    cfg = sliced(base, tunes[0], [(0, 1), (1, 2), (2, 3)], parameters={"t": 0.5},
                 s1={"t": [{"filter": "layers.1.mlp.up", "value": 0.9}, {"value": 0.5}]})
    jobs = jobs_by_name(plan(cfg))
    assert jobs["model.layers.1.mlp.up_proj.weight"].params["t"] == pytest.approx(0.9)
    assert jobs["model.layers.1.mlp.down_proj.weight"].params["t"] == pytest.approx(0.5)
    assert jobs["model.layers.2.mlp.up_proj.weight"].params["t"] == pytest.approx(0.5)


def test_nested_numbered_blocks_take_the_settings_of_their_outer_blocks_layer(tmp_path):
    """T5 numbers its sub-layers inside each block (`encoder.block.1.layer.0`): every tensor of block i takes slice
    settings of layer i, as the plan's own per-layer schedules do, not those of the sub-layer's number."""
    from transformers import T5Config, T5ForConditionalGeneration
    config = T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=3, num_decoder_layers=3, num_heads=2)
    for seed, name in enumerate(("base", "tune")):
        torch.manual_seed(seed)
        T5ForConditionalGeneration(config).save_pretrained(tmp_path / name)
    cfg = sliced(tmp_path / "base", tmp_path / "tune", [(0, 1), (1, 2), (2, 3)], s1={"t": 0.9})
    jobs = jobs_by_name(plan(cfg))
    by_block = {}
    for name, job in jobs.items():
        if ".block." in name:
            by_block.setdefault(int(name.split(".block.")[1].split(".")[0]), set()).add(job.params["t"])
    assert by_block == {0: {0.5}, 1: {0.9}, 2: {0.5}}
    assert len([n for n in jobs if ".block.1." in n and ".layer.2." in n]) > 0  # the decoder's third sub-layer
