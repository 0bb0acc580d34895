"""Spec parsing: strictness, overrides, per-model values, schedules, and mergekit translation."""
import pytest
import yaml

from taskfuse import IncompatibleInputsError, SpecError, plan
from taskfuse.plan.schedule import depth_position, interpolate
from taskfuse.spec import load_spec, parse_spec
from tests.conftest import spec_for


def jobs_by_name(p):
    return {j.name: j for j in p.jobs}


def test_nested_unknown_keys_are_reported_with_paths(llama_family):
    base, tunes = llama_family
    spec = spec_for("ties", base, tunes)
    spec["models"][1]["wieght"] = 2
    spec["tensor_rules"] = {"mising": "error"}
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert "models[1].'wieght'" in str(e.value) and "did you mean 'weight'" in str(e.value)
    assert "tensor_rules.'mising'" in str(e.value)


def test_relative_paths_resolve_against_spec_file(tmp_path, llama_family):
    base, tunes = llama_family
    spec = spec_for("linear", None, [tunes[0].name, tunes[1].name])
    path = tunes[0].parent / "rel.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = load_spec(path)
    assert loaded.models[0].path == str(tunes[0].resolve())
    path.unlink()


def test_a_folder_named_base_and_base_plus_adapter_resolve_against_the_spec_file(tmp_path, llama_family):
    """`base` is a keyword only where a spec names where the config or tokenizer comes from: a folder called base
    beside the spec is that folder, in `base:` and in BASE+ADAPTER alike."""
    import shutil
    base, tunes = llama_family
    shutil.copytree(base, tmp_path / "base")
    (tmp_path / "adapter").mkdir()
    path = tmp_path / "rel.yaml"
    path.write_text(yaml.safe_dump({"method": "task_arithmetic", "base": "base", "tokenizer_from": "base",
                                    "models": [{"path": "base+adapter"}, {"path": "org/model+adapter"}]}))
    loaded = load_spec(path)
    here = tmp_path.resolve()
    assert loaded.base == str(here / "base") and loaded.tokenizer_from == "base"
    assert [m.path for m in loaded.models] == [f"{here / 'base'}+{here / 'adapter'}", f"org/model+{here / 'adapter'}"]


def test_per_model_parameters_become_tuples(llama_family):
    base, tunes = llama_family
    spec = spec_for("ties", base, tunes, params={"density": 0.5})
    spec["models"][0]["params"] = {"density": 0.1}
    job = plan(spec).jobs[0]
    assert tuple(job.params["density"]) == (0.1, 0.5, 0.5)


def test_override_changes_method_and_later_wins(llama_family):
    base, tunes = llama_family
    spec = spec_for("ties", base, tunes, overrides=[
        {"tensors": ["*norm*"], "method": "task_arithmetic", "params": {"scale": 0.5}},
        {"tensors": "model.norm.weight", "params": {"scale": 0.25}},
    ])
    jobs = jobs_by_name(plan(spec))
    assert jobs["model.layers.0.input_layernorm.weight"].params["scale"] == 0.5
    assert jobs["model.norm.weight"].method == "task_arithmetic"
    assert jobs["model.norm.weight"].params["scale"] == 0.25
    assert jobs["model.layers.0.mlp.up_proj.weight"].method == "ties"


def test_override_weights_replace_model_weights_per_tensor_and_must_fit(llama_family):
    base, tunes = llama_family
    spec = spec_for("task_arithmetic", base, tunes, overrides=[
        {"tensors": "model.layers.0.*", "weights": [0.1, 0.2, 0.3]},
        {"tensors": "model.layers.0.mlp.*", "weights": [0.4, 0.5, 0.6]},
    ])
    jobs = jobs_by_name(plan(spec))
    assert jobs["model.layers.0.input_layernorm.weight"].weights == (0.1, 0.2, 0.3)
    assert jobs["model.layers.0.mlp.up_proj.weight"].weights == (0.4, 0.5, 0.6)
    assert jobs["model.norm.weight"].weights == (1.0, 1.0, 1.0)
    spec["overrides"][0]["weights"] = [0.1, 0.2]
    with pytest.raises(SpecError, match=r"overrides\[0\].*2 weights for 3 models"):
        parse_spec(spec)


def test_schedule_interpolation():
    assert interpolate([0.0, 1.0], 0.25) == pytest.approx(0.25)
    assert interpolate([0.0, 1.0, 0.0], 0.5) == pytest.approx(1.0)
    assert interpolate([0.2, 0.4, 0.8], 0.75) == pytest.approx(0.6)
    assert depth_position("model.embed_tokens.weight", 3) == 0.0
    assert depth_position("lm_head.weight", 3) == 0.0  # outside the layer stack: the first value, as mergekit
    assert depth_position("encoder.layer.1.output.dense.weight", 3) == 0.5


def test_integer_buffers_copy_from_base(tmp_path, llama_family):
    import torch
    from safetensors.torch import save_file

    base, tunes = llama_family
    root = tmp_path / "withbuf"
    paths = []
    for src in [base, *tunes[:2]]:
        from taskfuse.io.checkpoint import Checkpoint

        ck = Checkpoint.open(src)
        data = {n: ck.read(n) for n in ck.tensors}
        data["model.position_ids"] = torch.arange(64).unsqueeze(0)
        (root / src.name).mkdir(parents=True)
        save_file(data, root / src.name / "model.safetensors", metadata={"format": "pt"})
        paths.append(root / src.name)
    p = plan(spec_for("ties", paths[0], paths[1:]))
    job = jobs_by_name(p)["model.position_ids"]
    assert job.rule == "copy_base" and job.dtype == "int64" and job.sources[0].checkpoint == 0
    strict = spec_for("ties", paths[0], paths[1:], tensor_rules={"integer": "error"})
    with pytest.raises(IncompatibleInputsError, match="position_ids.*int64"):
        plan(strict)


def test_mergekit_filters_and_gradients(llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "slerp", "base_model": str(base),
           "models": [{"model": str(base)}, {"model": str(tunes[0])}],
           "parameters": {"t": [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": 0.9},
                                {"value": 0.5}]}}
    jobs = jobs_by_name(plan(cfg))
    assert jobs["model.layers.2.self_attn.q_proj.weight"].params["t"] == pytest.approx(1.0)
    assert jobs["model.layers.0.self_attn.q_proj.weight"].params["t"] == pytest.approx(0.0)
    assert jobs["model.layers.1.mlp.up_proj.weight"].params["t"] == pytest.approx(0.9)
    assert jobs["model.norm.weight"].params["t"] == pytest.approx(0.5)
    assert [s.checkpoint for s in jobs["model.norm.weight"].sources] == [0, 1]


def test_mergekit_dare_conventions(llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "dare_ties", "base_model": str(base),
           "models": [{"model": str(base)}] + [{"model": str(t), "parameters": {"weight": 0.5, "density": 0.4}}
                                               for t in tunes[:2]]}
    p = plan(cfg)
    job = p.jobs[0]
    assert job.params["rescale"] == "l1" and job.params["elect_on"] == "weighted" and job.params["normalize"] == "none"
    assert len(job.sources) == 2  # the base listed among models contributes no task vector


def test_plan_json_round_trip(llama_family):
    import json

    from taskfuse.plan.plan import Plan

    base, tunes = llama_family
    p = plan(spec_for("ties", base, tunes, params={"density": [0.2, 0.6]}))
    again = Plan.from_dict(json.loads(p.to_json()))
    assert again.jobs == p.jobs and again.checkpoints == p.checkpoints and again.spec == p.spec
