"""`taskfuse statistics` on a real tiny causal LM and its tokenizer, then regmean and fisher merges that read them,
all through the installed script; bad input gets a typed one-paragraph error and leaves nothing behind."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from taskfuse.io.statistics_file import TENSORS, statistics_kind
from tests.cli.test_user_errors import assert_user_error, taskfuse, write_spec
from tests.io.test_output import assert_untouched, foreign_folder


@pytest.mark.parametrize("kind, method", [("gram", "regmean"), ("fisher", "fisher")])
def test_statistics_then_a_merge_that_reads_them(tmp_path, lms, kind, method):
    base, tunes, data = lms
    folders = []
    for i, (tune, jsonl) in enumerate(zip(tunes, data)):
        done = taskfuse("statistics", tune, "--kind", kind, "--data", jsonl, "-o", tmp_path / f"s{i}")
        assert done.returncode == 0, done.stderr
        assert statistics_kind(tmp_path / f"s{i}", "test") == kind
        record = json.loads((tmp_path / f"s{i}" / "statistics.json").read_text())
        assert record["data"]["examples"] == 20 and record["data"]["labels"] == (kind == "fisher")
        folders.append(tmp_path / f"s{i}")
    stats = load_file(folders[0] / TENSORS)
    assert "model.layers.0.self_attn.q_proj.weight" in stats
    if kind == "fisher":  # normalised to unit norm over the model by default
        assert abs(sum(float((v.double() ** 2).sum()) for v in stats.values()) - 1) < 1e-4
    merged = merged_by_statistics(tmp_path, method, tunes, folders, AutoModelForCausalLM,
                                  "model.layers.0.mlp.down_proj.weight")
    assert torch.isfinite(merged(torch.tensor([[1, 2, 3]])).logits).all()


def merged_by_statistics(tmp_path, method, tunes, folders, model_class, name):
    """`taskfuse merge` of the tunes with their statistics, loaded; `name` checked moved off the plain average."""
    spec = write_spec(tmp_path, {"method": method, "models": [{"path": str(t), "statistics": str(f)}
                                                             for t, f in zip(tunes, folders)]})
    done = taskfuse("merge", spec, "-o", tmp_path / "merged")
    assert done.returncode == 0, done.stderr
    merged = model_class.from_pretrained(tmp_path / "merged")
    average = sum(model_class.from_pretrained(t).state_dict()[name] for t in tunes) / 2
    assert not torch.allclose(merged.state_dict()[name], average, atol=1e-5)  # the statistics moved it
    return merged


def test_bad_statistics_requests_are_refused_plainly(tmp_path, lms):
    base, tunes, data = lms
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "hessian", "--data", data[0], "-o", tmp_path / "a"),
                      "--kind 'hessian'", "gram, fisher")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 3}\n')
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "gram", "--data", bad, "-o", tmp_path / "b"),
                      "bad.jsonl:1")
    folder = foreign_folder(tmp_path)
    assert_user_error(taskfuse("statistics", tunes[0], "--kind", "gram", "--data", data[0], "-o", folder),
                      "not empty")
    assert_untouched(folder)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_fishers_with_the_models_labels_are_seeded_and_not_the_empirical_one(tmp_path, lms):
    base, tunes, data = lms
    runs = {}
    for name, args in (("given", []), ("sampled", ["--fisher-labels", "sampled", "--seed", "3"]),
                       ("again", ["--fisher-labels", "sampled", "--seed", "3"]),
                       ("weighted", ["--fisher-labels", "weighted-sum", "--batch-size", "4"])):
        done = taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", data[0], "-o", tmp_path / name, *args)
        assert done.returncode == 0, done.stderr
        runs[name] = load_file(tmp_path / name / TENSORS)
    record = json.loads((tmp_path / "sampled" / "statistics.json").read_text())
    assert record["fisher_labels"] == {"sampled": {"seed": 3}} and record["data"]["labels"] is False
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(runs["sampled"][name], runs["again"][name])
    assert not torch.allclose(runs["sampled"][name], runs["given"][name], rtol=0.05)
    assert not torch.allclose(runs["weighted"][name], runs["given"][name], rtol=0.05)
    assert json.loads((tmp_path / "weighted" / "statistics.json").read_text())["fisher_labels"] == "weighted-sum"
    assert abs(sum(float((v.double() ** 2).sum()) for v in runs["weighted"].values()) - 1) < 1e-4
    refused = taskfuse("statistics", tunes[0], "--kind", "fisher", "--data", data[0], "-o", tmp_path / "x",
                       "--fisher-labels", "expected")
    assert_user_error(refused, str(tunes[0]), "--fisher-labels 'expected'", "sampled")
    assert not (tmp_path / "x").exists()


def test_fusionbench_floor_placement_is_folded_in_at_gathering(tmp_path, lms):
    """--floor-before-scaling stores (F + floor) / (‖F‖ + floor), F the raw Fisher, as FusionBench weighs models."""
    base, tunes, data = lms
    floor = 1e-3  # large enough to tell the placements apart in float32
    common = [tunes[0], "--kind", "fisher", "--data", data[0], "--fisher-labels", "weighted-sum"]
    raw = taskfuse("statistics", *common, "--no-normalize", "-o", tmp_path / "raw")
    folded = taskfuse("statistics", *common, "--floor-before-scaling", str(floor), "-o", tmp_path / "folded")
    assert raw.returncode == 0 and folded.returncode == 0, raw.stderr + folded.stderr
    assert "floor: 1e-30" in folded.stderr
    assert json.loads((tmp_path / "folded" / "statistics.json").read_text())["floor_before_scaling"] == floor
    fisher, ours = load_file(tmp_path / "raw" / TENSORS), load_file(tmp_path / "folded" / TENSORS)
    norm = sum(float((v.double() ** 2).sum()) for v in fisher.values()) ** 0.5
    for name, value in fisher.items():
        torch.testing.assert_close(ours[name], (value + floor) / (norm + floor), rtol=1e-5, atol=1e-9)
    assert float(min(v.min() for v in ours.values())) >= floor / (norm + floor) * (1 - 1e-6)
    for args, said in ((["--kind", "gram"], "--kind fisher"), (["--kind", "fisher", "--no-normalize"], "--normalize"),
                       (["--kind", "fisher", "--floor-before-scaling", "0"], "positive number")):
        refused = taskfuse("statistics", tunes[0], "--data", data[0], "-o", tmp_path / "x",
                           *(["--floor-before-scaling", "1e-6"] if "--floor-before-scaling" not in args else []), *args)
        assert_user_error(refused, said)
        assert not (tmp_path / "x").exists()


def test_a_causal_lm_whose_class_is_not_named_for_causal_lm_is_one(tmp_path, lms):
    """GPT-2's head class is GPT2LMHeadModel: transformers' own table says what a causal LM is, not the name."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from taskfuse.testing.tiny_llm import byte_bpe_tokenizer
    tok = byte_bpe_tokenizer()
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256)).save_pretrained(
        tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    done = taskfuse("statistics", tmp_path / "gpt2", "--kind", "fisher", "--data", lms[2][0], "-o", tmp_path / "s")
    assert done.returncode == 0, done.stderr
    assert "transformer.h.0.attn.c_attn.weight" in load_file(tmp_path / "s" / TENSORS)
