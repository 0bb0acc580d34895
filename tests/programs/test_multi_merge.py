"""Multi-stage merges (programs/multi_merge.py): stages in dependency order, intermediates kept or removed, reuse
only of what is unchanged, and the mistakes a multi-stage file can hold."""
import pytest
import torch
import yaml
from safetensors.torch import load_file

from taskfuse import SpecError, merge
from taskfuse.programs.multi_merge import run_stages
from taskfuse.spec import load_spec

STAGE_KEYS = ("first", "second")


def stages_file(tmp_path, base, tunes, final_weight=0.5, first_weight=0.5):
    """mergekit-multi's example shape: a linear merge, a SLERP from it, a TIES of that and a fine-tune (the final
    stage is listed first: the order comes from the references)."""
    documents = [
        {"merge_method": "ties", "base_model": str(base),
         "models": [{"model": "second", "parameters": {"weight": final_weight, "density": 0.6}},
                    {"model": str(tunes[2]), "parameters": {"weight": 0.5, "density": 0.8}}]},
        {"name": "second", "merge_method": "slerp", "base_model": "first", "models": [{"model": str(tunes[1])}],
         "parameters": {"t": 0.3}},
        {"name": "first", "merge_method": "linear", "dtype": "float32",
         "models": [{"model": str(tunes[0]), "parameters": {"weight": first_weight}},
                    {"model": str(base), "parameters": {"weight": 0.5}}]},
    ]
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path, documents


def by_hand(tmp_path, documents):
    first = merge({k: v for k, v in documents[2].items() if k != "name"}, tmp_path / "h-first").out
    second = {k: v for k, v in documents[1].items() if k != "name"}
    second = {**second, "base_model": str(first)}
    second_out = merge(second, tmp_path / "h-second").out
    final = {**documents[0], "models": [{**documents[0]["models"][0], "model": str(second_out)},
                                        documents[0]["models"][1]]}
    return load_file(merge(final, tmp_path / "h-final").out / "model.safetensors")


def test_stages_run_in_dependency_order_and_leave_no_intermediates(tmp_path, llama_family):
    base, tunes = llama_family
    path, documents = stages_file(tmp_path, base, tunes)
    seen = []
    runs = run_stages(path, tmp_path / "out", report=lambda i, n, stage, reused: seen.append(stage.name))
    assert seen == ["first", "second", None] and not any(r.reused for r in runs)
    ours = load_file(tmp_path / "out" / "model.safetensors")
    reference = by_hand(tmp_path, documents)
    assert ours.keys() == reference.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=0, msg=name)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_kept_intermediates_are_reused_only_while_they_and_their_inputs_are_unchanged(tmp_path, llama_family):
    base, tunes = llama_family
    keep = tmp_path / "stages"
    path, _ = stages_file(tmp_path, base, tunes)
    run_stages(path, tmp_path / "out", keep)
    assert sorted(p.name for p in keep.iterdir()) == ["first", "second"]

    def reused_after(**change):
        stages_file(tmp_path, base, tunes, **change)
        return {r.name: r.reused for r in run_stages(path, tmp_path / "out", keep)}
    assert reused_after(final_weight=0.7) == {"first": True, "second": True, None: False}
    # the first stage changed: the second, whose spec names the same folder, is merged again too
    assert reused_after(first_weight=0.9) == {"first": False, "second": False, None: False}


def test_the_python_api_runs_a_stages_file(tmp_path, llama_family):
    import taskfuse
    path, _ = stages_file(tmp_path, *llama_family)
    runs = taskfuse.merge_stages(path, tmp_path / "out", intermediate_dir=tmp_path / "kept")
    assert [(r.name, r.reused) for r in runs] == [("first", False), ("second", False), (None, False)]
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "kept" / "second").is_dir()


def test_a_failing_stage_leaves_nothing_behind(tmp_path, llama_family):
    base, tunes = llama_family
    path, documents = stages_file(tmp_path, base, tunes)
    documents[0]["models"][1]["model"] = str(tmp_path / "missing")
    path.write_text(yaml.safe_dump_all(documents))
    with pytest.raises(Exception, match="missing"):
        run_stages(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stages.yaml"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d[0].update(name="final") or d[1]["models"].append({"model": "final"}), r"in a cycle"),
    (lambda d: d[2]["models"].append({"model": "second"}), r"in a cycle: second \(uses first\), first \(uses second\)"),
    (lambda d: d[1].pop("name"), r"has 2 \(one unnamed, one unnamed\)"),
    (lambda d: d[2].update(name="second"), r"name 'second' is given to 2 stages"),
])
def test_stage_files_taskfuse_cannot_order_are_refused_with_the_fix(tmp_path, llama_family, change, message):
    base, tunes = llama_family
    path, documents = stages_file(tmp_path, base, tunes)
    change(documents)
    path.write_text(yaml.safe_dump_all(documents))
    with pytest.raises(SpecError, match=message):
        run_stages(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_commands_that_take_one_spec_say_what_a_stages_file_is(tmp_path, llama_family):
    path, _ = stages_file(tmp_path, *llama_family)
    with pytest.raises(SpecError, match=r"holds 3 merges separated by `---`.*Fix: run `taskfuse merge`"):
        load_spec(path)


def test_the_command_line_runs_the_stages_and_refuses_other_outputs(tmp_path, llama_family):
    from tests.cli.test_user_errors import assert_user_error, taskfuse
    path, _ = stages_file(tmp_path, *llama_family)
    done = taskfuse("merge", path, "-o", tmp_path / "out", "--intermediate-dir", tmp_path / "kept")
    assert done.returncode == 0, done.stderr
    assert "stage 1/3 first: merging" in done.stderr and "after 3 stages (0 reused)" in done.stderr
    dry = taskfuse("merge", path, "-o", tmp_path / "dry", "--dry-run")
    assert dry.returncode == 0 and "3 stages in this order: first, second, (final)" in dry.stderr, dry.stderr
    assert_user_error(taskfuse("merge", path, "-o", tmp_path / "gguf", "--format", "gguf"),
                      "a multi-stage merge writes its stages and its result as model folders")
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump({"method": "linear", "models": [{"path": str(llama_family[0])}]}))
    assert_user_error(taskfuse("merge", one, "-o", tmp_path / "x", "--intermediate-dir", tmp_path / "k"),
                      "--intermediate-dir is for a multi-stage spec")
    assert not (tmp_path / "dry").exists() and not (tmp_path / "gguf").exists() and not (tmp_path / "x").exists()
