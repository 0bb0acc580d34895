"""mergekit's weights given per layer or per tensor (spec/mergekit_weights.py): each tensor's weights as the plan
sees them, relative paths, and the recorded depth. The merges against mergekit's own: the *_weights* fixtures of
tests/methods/test_reference_mergekit.py."""
import pytest
import yaml

from taskfuse import IncompatibleInputsError, SpecError, merge, plan
from taskfuse.spec import load_spec, parse_spec


def recipe(base, tunes, first_weight, second_weight=0.5, **parameters):
    return {"merge_method": "task_arithmetic", "base_model": str(base), "parameters": parameters,
            "models": [{"model": str(tunes[0]), "parameters": {"weight": first_weight}},
                       {"model": str(tunes[1]), "parameters": {"weight": second_weight}}]}


def test_each_tensor_takes_its_models_first_matching_rule_and_gradients_run_along_the_depth(llama_family):
    base, tunes = llama_family
    cfg = recipe(base, tunes, [{"filter": "mlp", "value": 0.2}, {"filter": "mlp.up", "value": 0.9},
                               {"value": [0.0, 1.0]}])
    jobs = {j.name: j for j in plan(cfg).jobs}
    assert jobs["model.layers.1.mlp.up_proj.weight"].weights == (0.2, 0.5)  # "mlp" comes first
    assert jobs["model.layers.0.self_attn.q_proj.weight"].weights == (0.0, 0.5)
    assert jobs["model.layers.1.self_attn.q_proj.weight"].weights == (0.5, 0.5)  # layer 1 of 3: halfway
    assert jobs["model.layers.2.self_attn.q_proj.weight"].weights == (1.0, 0.5)
    assert jobs["lm_head.weight"].weights == (0.0, 0.5)  # outside the layer stack: the gradient's start
    assert parse_spec(cfg).depth == 3


def test_a_model_without_a_matching_rule_takes_the_configs_weight(llama_family):
    base, tunes = llama_family
    cfg = recipe(base, tunes, [{"filter": "self_attn", "value": 1.0}], second_weight=0.5,
                 weight=[{"filter": "mlp", "value": 0.2}, {"value": 0.6}])
    jobs = {j.name: j for j in plan(cfg).jobs}
    assert jobs["model.layers.0.self_attn.q_proj.weight"].weights == (1.0, 0.5)
    assert jobs["model.layers.0.mlp.up_proj.weight"].weights == (0.2, 0.5)
    assert jobs["model.norm.weight"].weights == (0.6, 0.5)


def test_relative_paths_are_read_from_the_specs_folder(tmp_path, llama_family):
    base, tunes = llama_family
    for path in (base, *tunes[:2]):  # the models beside the spec, named relatively in it
        (tmp_path / path.name).symlink_to(path)
    cfg = recipe(base, tunes, [0.0, 1.0])
    cfg["base_model"] = base.name
    for entry, path in zip(cfg["models"], tunes):
        entry["model"] = path.name
    spec = tmp_path / "recipe.yaml"
    spec.write_text(yaml.safe_dump(cfg))
    assert load_spec(spec).depth == 3
    assert merge(spec, tmp_path / "out").out.exists()


def test_the_depth_the_weights_were_evaluated_for_is_checked(tmp_path, llama_family, bert_family):
    base, tunes = llama_family
    spec = parse_spec(recipe(base, tunes, [0.0, 1.0]))
    other_base, other_tunes = bert_family
    moved = spec.model_copy(update={"base": str(other_base), "overrides": [],
                                    "models": [m.model_copy(update={"path": str(p)})
                                               for m, p in zip(spec.models, other_tunes)]})
    with pytest.raises(IncompatibleInputsError, match=r"\(3 layers\).*have 2"):
        merge(moved, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_filtered_settings_of_a_model_are_still_refused(llama_family):
    base, tunes = llama_family
    cfg = recipe(base, tunes, 1.0)
    cfg["models"][0]["parameters"]["density"] = [{"filter": "mlp", "value": 0.5}]
    with pytest.raises(SpecError, match=r"per-model parameter filters are not supported \(a filtered `weight` is\)"):
        parse_spec(cfg)
