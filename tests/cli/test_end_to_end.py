"""The CLI on tiny real checkpoints; every output loads with transformers and runs a forward pass."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel, AutoModelForCausalLM
from typer.testing import CliRunner

from taskfuse.cli.main import app
from tests.conftest import spec_for

runner = CliRunner()


def write(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("method", ["ties", "dare_ties", "task_arithmetic", "iso_c"])
def test_merge_llama_loads_and_runs(tmp_path, llama_family, method):
    base, tunes = llama_family
    out = tmp_path / "merged"
    res = runner.invoke(app, ["merge", str(write(tmp_path, spec_for(method, base, tunes))), "-o", str(out),
                              "--max-shard-size", "100KB"])
    assert res.exit_code == 0, res.output
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "README.md",
            "taskfuse_spec.yaml"} <= files
    assert not [f for f in files if f.endswith(".partial")]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 128) and torch.isfinite(logits).all()
    assert method in (out / "README.md").read_text()


def test_console_script_exits_fast_with_its_message_and_a_complete_model(tmp_path, llama_family):
    # the installed `taskfuse` script ends a merge with os._exit: stdout must still be flushed, the exit code 0
    base, tunes = llama_family
    script = shutil.which("taskfuse", path=str(Path(sys.executable).parent))
    out = tmp_path / "merged"
    done = subprocess.run([script, "merge", str(write(tmp_path, spec_for("ties", base, tunes))), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stderr.replace("\n", "")  # messages and progress go to stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    failed = subprocess.run([script, "merge", str(write(tmp_path, {"method": "nope", "models": []}, "bad.yaml")),
                             "-o", str(tmp_path / "o2")], capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0 and "nope" in failed.stdout + failed.stderr


def test_merge_bert_single_file(tmp_path, bert_family):
    base, tunes = bert_family
    out = tmp_path / "bert"
    res = runner.invoke(app, ["merge", str(write(tmp_path, spec_for("ties", base, tunes))), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").exists() and not (out / "model.safetensors.index.json").exists()
    model = AutoModel.from_pretrained(out)
    hidden = model(input_ids=torch.tensor([[2, 7, 9]])).last_hidden_state
    assert hidden.shape == (1, 3, 48)


def test_plan_json_lists_every_tensor_without_writing(tmp_path, llama_family):
    base, tunes = llama_family
    spec = spec_for("ties", base, tunes, params={"density": [0.2, 0.8]},
                    overrides=[{"tensors": "*norm*", "method": "linear"}])
    res = runner.invoke(app, ["plan", str(write(tmp_path, spec)), "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    jobs = {j["name"]: j for j in plan["jobs"]}
    assert jobs["model.norm.weight"]["method"] == "linear"
    assert jobs["model.layers.0.mlp.up_proj.weight"]["params"]["density"] == pytest.approx(0.2)
    assert jobs["model.layers.2.mlp.up_proj.weight"]["params"]["density"] == pytest.approx(0.8)
    assert jobs["model.layers.1.mlp.up_proj.weight"]["params"]["density"] == pytest.approx(0.5)
    assert list(tmp_path.iterdir()) == [tmp_path / "spec.yaml"]


def test_dry_run_writes_nothing(tmp_path, llama_family):
    base, tunes = llama_family
    res = runner.invoke(app, ["merge", str(write(tmp_path, spec_for("ties", base, tunes))), "-o",
                              str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "o").exists()


def test_methods_listing_is_generated_from_registry():
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0
    for name in ("ties", "tsv", "iso_cts", "model_stock", "karcher"):
        assert name in res.output
    detail = runner.invoke(app, ["methods", "ties"])
    assert "sign_election" in detail.output and "2306.01708" in detail.output


def test_mergekit_yaml_is_accepted(tmp_path, llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "ties", "base_model": str(base), "dtype": "float32",
           "parameters": {"normalize": True, "int8_mask": True},
           "models": [{"model": str(t), "parameters": {"weight": 0.5, "density": [0.3, 0.9]}} for t in tunes[:2]]}
    out = tmp_path / "mk"
    res = runner.invoke(app, ["merge", str(write(tmp_path, cfg)), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float32
    saved = yaml.safe_load((out / "taskfuse_spec.yaml").read_text())
    assert saved["params"]["elect_on"] == "weighted" and saved["params"]["normalize"] == "weights"


def test_slices_stack_layers(tmp_path, llama_family):
    base, tunes = llama_family
    cfg = {"merge_method": "passthrough", "dtype": "bfloat16",
           "slices": [{"sources": [{"model": str(tunes[0]), "layer_range": [0, 2]}]},
                      {"sources": [{"model": str(tunes[1]), "layer_range": [1, 3]}]}]}
    out = tmp_path / "stack"
    res = runner.invoke(app, ["merge", str(write(tmp_path, cfg)), "-o", str(out)])
    assert res.exit_code == 0, res.output
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4
    src = AutoModelForCausalLM.from_pretrained(tunes[1])
    torch.testing.assert_close(model.model.layers[3].mlp.up_proj.weight, src.model.layers[2].mlp.up_proj.weight)


def test_demo_runs(tmp_path):
    res = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert "tsv" in res.output and (tmp_path / "demo" / "merged" / "ties" / "config.json").exists()
    assert "Not in the demo" in res.output and not (tmp_path / "demo" / "merged" / "regmean").exists()
    assert f"taskfuse plan {tmp_path / 'demo' / 'specs' / 'ties.yaml'} --json" in res.output  # a path that exists
    stale = tmp_path / "demo" / "merged" / "ties" / "stale.txt"
    stale.write_text("from the first run")
    again = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo")])  # an earlier demo is replaced
    assert again.exit_code == 0, again.output
    assert (tmp_path / "demo" / "merged" / "ties" / "config.json").exists() and not stale.exists()


def test_tokenizer_files_come_from_the_chosen_source(tmp_path, bert_family):
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    base, tunes = bert_family
    words = ["[PAD]", "[UNK]", "merge", "the", "models"]
    root = tmp_path / "with_tokenizer"
    shutil.copytree(base.parent, root)
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(root / tunes[1].name)  # only the second fine-tune carries a tokenizer
    spec = spec_for("task_arithmetic", root / "base", [root / t.name for t in tunes],
                    tokenizer_from=str(root / tunes[1].name))
    out = tmp_path / "out"
    res = runner.invoke(app, ["merge", str(write(tmp_path, spec)), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "tokenizer.json").exists() and (out / "config.json").exists()
    assert AutoTokenizer.from_pretrained(out)("merge the models")["input_ids"] == [2, 3, 4]
