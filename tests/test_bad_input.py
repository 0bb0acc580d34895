"""Every kind of bad input gets a typed error that names the model, the tensor and the fix, and leaves no output."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from taskfuse import (
    CheckpointError, HubUnavailableError, IncompatibleInputsError, NonFiniteInputError, OutputExistsError, SpecError,
    TaskfuseError, UnknownMethodError, merge,
)
from taskfuse.io.checkpoint import Checkpoint
from tests.conftest import spec_for


def assert_no_output(tmp_path, out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial")]


def shard_holding(ckpt, tensor):
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    return ckpt / index["weight_map"][tensor]


def rewrite(ckpt, tensor, fn):
    """Replace one tensor inside its shard (keeping the index valid)."""
    path = shard_holding(ckpt, tensor)
    data = load_file(path)
    data = fn(data)
    save_file(data, path, metadata={"format": "pt"})


def test_unknown_method_suggests_closest(tmp_path, llama_family):
    base, tunes = llama_family
    with pytest.raises(UnknownMethodError, match="did you mean 'ties'"):
        merge(spec_for("tiez", base, tunes), tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")


def test_unknown_keys_all_reported_with_suggestions(tmp_path, llama_family):
    base, tunes = llama_family
    spec = spec_for("ties", base, tunes, parms={"density": 0.2}, sed=3)
    with pytest.raises(SpecError) as e:
        merge(spec, tmp_path / "o")
    assert "'parms'" in str(e.value) and "did you mean 'params'" in str(e.value)
    assert "'sed'" in str(e.value) and "2 problems" in str(e.value)


def test_unknown_method_parameter_names_tensor(tmp_path, llama_family):
    base, tunes = llama_family
    with pytest.raises(SpecError, match="'densty'.*did you mean 'density'") as e:
        merge(spec_for("ties", base, tunes, params={"densty": 0.2}), tmp_path / "o")
    problems, tensors = int(str(e.value).split("(")[1].split()[0]), len(Checkpoint.open(base).tensors)
    lines = str(e.value).splitlines()[1:]  # the same problem at every tensor: one line, the others counted after it
    assert problems == tensors and len(lines) == 1 and f"the same at {tensors - 1} more tensors" in lines[0]
    assert "'model.norm.weight'" in lines[0] or "'lm_head.weight'" in lines[0]  # the last one named too


def test_out_of_range_parameter(tmp_path, llama_family):
    base, tunes = llama_family
    with pytest.raises(SpecError, match="density"):
        merge(spec_for("ties", base, tunes, params={"density": 1.5}), tmp_path / "o")


def test_delta_method_without_base(tmp_path, llama_family):
    _, tunes = llama_family
    with pytest.raises(SpecError, match="needs `base`"):
        merge(spec_for("ties", None, tunes), tmp_path / "o")


def test_shape_mismatch_names_model_tensor_and_fix(family_copy, tmp_path):
    base, tunes = family_copy
    name = "model.layers.1.mlp.down_proj.weight"
    rewrite(tunes[1], name, lambda d: {**d, name: torch.zeros(64, 95, dtype=torch.bfloat16)})
    out = tmp_path / "o"
    with pytest.raises(IncompatibleInputsError) as e:
        merge(spec_for("ties", base, tunes), out)
    msg = str(e.value)
    assert name in msg and str(tunes[1]) in msg and "Fix:" in msg and "shape mismatch" in msg
    assert_no_output(tmp_path, out)


def test_vocab_size_mismatch(family_copy, tmp_path):
    base, tunes = family_copy
    name = "model.embed_tokens.weight"
    rewrite(tunes[0], name, lambda d: {**d, name: torch.zeros(130, 64, dtype=torch.bfloat16)})
    with pytest.raises(IncompatibleInputsError, match="vocabulary size mismatch.*128 rows.*130"):
        merge(spec_for("ties", base, tunes), tmp_path / "o")


def drop_tensor(folder, name):
    """Remove one tensor from a sharded checkpoint: from its shard and from the index."""
    rewrite(folder, name, lambda d: {k: v for k, v in d.items() if k != name})
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    del data["weight_map"][name]
    index.write_text(json.dumps(data))


def test_missing_tensor_and_rules(family_copy, tmp_path):
    base, tunes = family_copy
    name = "model.layers.0.self_attn.q_proj.weight"
    drop_tensor(tunes[2], name)
    with pytest.raises(IncompatibleInputsError, match=f"{name}.*missing from model.*tensor_rules.missing"):
        merge(spec_for("ties", base, tunes), tmp_path / "o")
    spec = spec_for("task_arithmetic", base, tunes, tensor_rules={"missing": "copy_base"})
    out = merge(spec, tmp_path / "copied").out
    torch.testing.assert_close(Checkpoint.open(out).read(name), Checkpoint.open(base).read(name))
    present = merge(spec_for("task_arithmetic", base, tunes, tensor_rules={"missing": "merge_present"}),
                    tmp_path / "present")
    job = next(j for j in present.plan.jobs if j.name == name)
    assert len(job.sources) == 2


def test_missing_shard(family_copy, tmp_path):
    base, tunes = family_copy
    shard = shard_holding(tunes[0], "model.norm.weight")
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name}.*missing.*Fix"):
        merge(spec_for("ties", base, tunes), tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")


def test_truncated_safetensors(family_copy, tmp_path):
    base, tunes = family_copy
    shard = shard_holding(tunes[1], "model.norm.weight")
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointError, match=f"{shard.name}.*truncated"):
        merge(spec_for("ties", base, tunes), tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")


@pytest.mark.parametrize("method,poisoned,value", [
    ("ties", "tune", float("nan")),  # sliced: checked as the slices are built
    ("task_arithmetic", "base", float("inf")),  # elementwise, the base side of t - base
    ("linear", "tune", float("-inf")),  # weight space: no base in the slices
    ("tsv", "tune", float("nan")),  # whole-tensor method: checked when read
    ("slerp", "tune", float("inf")),  # checked on the Gram matrix of its first pass
    ("dare_ties_l1", "base", float("nan")),  # checked on the L1 norms of its first pass
])
def test_nan_or_inf_in_input_leaves_nothing(family_copy, tmp_path, method, poisoned, value):
    base, tunes = family_copy
    name = "model.layers.2.mlp.gate_proj.weight"
    target = base if poisoned == "base" else tunes[-1]

    def poison(d):
        t = d[name].clone()
        t[3, 5] = value
        return {**d, name: t}

    rewrite(target, name, poison)
    out = tmp_path / "o"
    spec = spec_for(method, base if method not in ("linear", "slerp") else None, tunes)
    if method == "slerp":
        spec["models"] = [{"path": str(base)}, {"path": str(tunes[-1])}]
    if method == "dare_ties_l1":
        spec.update(method="dare_ties", params={"rescale": "l1", "density": 0.5})
    with pytest.raises(NonFiniteInputError, match=f"{target}.*{name}.*NaN"):
        merge(spec, out, max_shard_size="50KB")
    assert_no_output(tmp_path, out)


def test_huge_finite_inputs_are_not_mistaken_for_inf(family_copy, tmp_path):
    # the streamed check sums each slice; a sum that overflows on finite values must not fail the merge
    base, tunes = family_copy
    name = "model.layers.2.mlp.gate_proj.weight"
    for tune in tunes:
        rewrite(tune, name, lambda d: {**d, name: torch.full_like(d[name], 3e38)})
    result = merge(spec_for("linear", None, tunes), tmp_path / "o")
    merged = Checkpoint.open(result.out).read(name)
    assert torch.isfinite(merged).all() and float(merged.min()) == pytest.approx(3e38, rel=1e-2)  # bf16 output


def test_slerp_of_huge_opposite_inputs_overflowing_float32_is_caught(family_copy, tmp_path):
    # antiparallel, so SLERP takes its linear path, whose difference b - a overflows float32: the emitted slices'
    # bound (their norms, here inf) must not let the output check be skipped
    base, tunes = family_copy
    name = "model.layers.2.mlp.gate_proj.weight"
    for tune, value in zip(tunes[:2], (3e38, -3e38)):
        rewrite(tune, name, lambda d: {**d, name: torch.full_like(d[name], value)})
    spec = {"method": "slerp", "models": [{"path": str(t)} for t in tunes[:2]], "params": {"t": 0.5}}
    with pytest.raises(TaskfuseError, match=f"slerp.*NaN/Inf.*{name}"):
        merge(spec, tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")


def test_existing_nonempty_output(tmp_path, llama_family):
    base, tunes = llama_family
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        merge(spec_for("ties", base, tunes), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_shard_without_read_permission(family_copy, tmp_path):
    base, tunes = family_copy
    shard = shard_holding(tunes[0], "model.norm.weight")
    shard.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(CheckpointError, match=f"{shard.name}"):
            merge(spec_for("ties", base, tunes), tmp_path / "o")
        return
    # Root reads any file, and CI runs as root: run the merge with the two capabilities that let it do so dropped
    # (util-linux's setpriv), so the permission check applies as it does to any user.
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_for("ties", base, tunes)))
    script = shutil.which("taskfuse", path=str(Path(sys.executable).parent))
    drop = "-dac_override,-dac_read_search"
    done = subprocess.run(["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--", script, "merge",
                           str(spec), "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2 and "CheckpointError" in text and shard.name in text and "Traceback" not in text, text
    assert_no_output(tmp_path, tmp_path / "o")


def test_unreadable_shard_directory_in_place_of_file(family_copy, tmp_path):
    base, tunes = family_copy
    shard = shard_holding(tunes[0], "model.norm.weight")
    shard.unlink()
    shard.mkdir()  # readable by nobody as a file, root included
    with pytest.raises(CheckpointError, match=f"{shard.name}.*Fix"):
        merge(spec_for("ties", base, tunes), tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")


def test_unreadable_path(tmp_path, llama_family):
    base, tunes = llama_family
    with pytest.raises(CheckpointError, match="does not exist.*Fix"):
        merge(spec_for("ties", base, [tunes[0], tmp_path / "nope"]), tmp_path / "o")
    notdir = tmp_path / "file.txt"
    notdir.write_text("x")
    with pytest.raises(CheckpointError, match="no model.safetensors.*Fix: name the folder that holds the weights"):
        merge(spec_for("ties", base, [tunes[0], tmp_path]), tmp_path / "o2")


def test_an_older_sentence_transformers_layout_is_named_with_how_to_save_it_again(tmp_path):
    """sentence-transformers before 2.3 saved the transformer in a module folder (0_Transformer/) named by
    modules.json, not at the root; sentence-transformers still loads such folders, so say how to convert it."""
    from transformers import BertConfig, BertModel

    old = tmp_path / "old"
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(old / "0_Transformer")
    (old / "1_Pooling").mkdir()
    (old / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8,
                                                              "pooling_mode_mean_tokens": True}))
    (old / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    with pytest.raises(CheckpointError, match=r"older layout, its transformer in 0_Transformer/.*"
                                              r"SentenceTransformer\(path\)\.save\(new_path\)"):
        merge({"method": "task_arithmetic", "base": str(old / "0_Transformer"), "models": [{"path": str(old)}]},
              tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")


def test_binary_file_posing_as_checkpoint(tmp_path, llama_family):
    base, tunes = llama_family
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        merge(spec_for("ties", base, [tunes[0], bad]), tmp_path / "o")


def test_hub_id_offline_fails_fast_and_clearly(tmp_path, llama_family, monkeypatch):
    base, tunes = llama_family
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(HubUnavailableError, match="some-org/some-model.*Fix"):
        merge(spec_for("ties", base, [tunes[0], "some-org/some-model"]), tmp_path / "o")


def test_mergekit_unsupported_keys_are_errors(tmp_path, llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "task_arithmetc", "base_model": str(base), "tokenizer_source": "union",
           "modules": {"text_decoder": {}}, "models": [{"model": str(t)} for t in tunes]}
    with pytest.raises(SpecError) as e:
        merge(cfg, tmp_path / "o")
    assert "'task_arithmetc'" in str(e.value) and "'task_arithmetic'" in str(e.value) and "'modules'" in str(e.value)
    # Arcee Fusion fuses one model into the base
    cfg = {"merge_method": "arcee_fusion", "base_model": str(base), "models": [{"model": str(t)} for t in tunes]}
    with pytest.raises(SpecError, match="'arcee_fusion' takes 1 models?, the spec lists 3"):
        merge(cfg, tmp_path / "o")
    # a chat template taskfuse does not have by name, and NuSLERP of more than two models
    cfg = {"merge_method": "nuslerp", "base_model": str(base), "chat_template": "x",
           "models": [{"model": str(t)} for t in tunes]}
    with pytest.raises(SpecError, match="chat_template 'x' is neither"):
        merge(cfg, tmp_path / "o")
    del cfg["chat_template"]
    with pytest.raises(SpecError, match="'nuslerp_task_vectors' takes 2 models, the spec lists 3"):
        merge(cfg, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_copied_float_tensors_take_the_output_dtype(family_copy, tmp_path):
    base, tunes = family_copy
    name = "model.layers.0.self_attn.q_proj.weight"
    drop_tensor(tunes[2], name)
    spec = spec_for("task_arithmetic", base, tunes, dtype="float32", tensor_rules={"missing": "copy_base"})
    jobs = {j.name: j for j in merge(spec, tmp_path / "o").plan.jobs}
    assert jobs[name].rule == "copy_base" and jobs[name].dtype == "float32"  # base is bf16


def test_problems_are_listed_once_per_kind_only_where_three_or_more_differ_in_their_tensor_alone():
    from taskfuse.errors import collect
    problems = [f"tensor 'layers.{i}.w' is missing from ft1. Fix: x" for i in range(4)] + \
               ["tensor 'a' is missing from ft2. Fix: x", "tensor 'b' is missing from ft2. Fix: x", "no base"]
    with pytest.raises(SpecError) as e:
        collect(problems, SpecError, "header")
    assert str(e.value).splitlines() == [
        "header (7 problems):",
        "  - tensor 'layers.0.w' is missing from ft1. Fix: x — and the same at 3 more tensors ('layers.1.w', "
        "'layers.2.w', 'layers.3.w')",
        "  - tensor 'a' is missing from ft2. Fix: x", "  - tensor 'b' is missing from ft2. Fix: x", "  - no base"]


def test_an_average_of_weights_that_sum_to_zero_is_refused_and_nothing_is_written(tmp_path, llama_family):
    _, tunes = llama_family
    models = [{"path": str(tunes[0]), "weight": 1.0}, {"path": str(tunes[1]), "weight": -1.0}]
    with pytest.raises(SpecError, match=r"linear divides by the sum.*\[1.0, -1.0\] sum to 0.*normalize: false.*task_"):
        merge({"method": "linear", "models": models}, tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")
    with pytest.raises(SpecError, match=r"karcher divides by the sum"):  # it stopped on NaN, blaming an overflow
        merge({"method": "karcher", "models": models}, tmp_path / "o")
    with pytest.raises(SpecError, match=r"overrides\[0\]'s weights"):
        merge({"method": "linear", "models": [{"path": str(t)} for t in tunes[:2]],
               "overrides": [{"tensors": "model.layers.1.*", "weights": [0.0, 0.0]}]}, tmp_path / "o")
    merge({"method": "linear", "models": models, "params": {"normalize": False}}, tmp_path / "difference")
    assert (tmp_path / "difference" / "config.json").exists()  # the plain weighted sum, asked for by name


@pytest.mark.parametrize("method", ["ties", "tsv", "task_arithmetic"])
def test_a_delta_merge_whose_models_include_its_base_is_refused_with_the_fix(tmp_path, llama_family, method):
    base, tunes = llama_family
    spec = {"method": method, "base": str(base), "models": [{"path": str(base)}, *({"path": str(t)} for t in tunes)]}
    with pytest.raises(SpecError, match=r"models\[0\] .* is the spec's base.*Fix: remove it from `models`"):
        merge(spec, tmp_path / "o")
    assert_no_output(tmp_path, tmp_path / "o")
    merge({**spec, "method": "linear"}, tmp_path / "soup")  # a weight-space soup may hold the base as a member
