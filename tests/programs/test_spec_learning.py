"""`taskfuse learn --spec`: coefficients for a user's causal LMs, learned from one JSONL of text per model.

The models are real Llama checkpoints built from a transformers config and fine-tuned here on real Debian text
(WordNet glosses, fortunes), with the benchmark encoder's real WordPiece tokenizer standing in for an LM's own.
"""
import json
import os
import shutil
import subprocess

import pytest
import torch
import yaml

from taskfuse.eval.encoder import base_encoder_dir, load_tokenizer
from taskfuse.eval.tasks import load_task
from taskfuse.zoo.recipe import VARIANTS
from tests.cli.test_user_errors import SCRIPT

TASKS = ("wordnet_pos", "fortune_language")


def mean_loss(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    with torch.no_grad():
        return float(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss)


@pytest.fixture(scope="module")
def lm_family(tmp_path_factory):
    """A random-init tiny Llama and two fine-tunes of it, each on one task's texts; JSONL data per task."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("lm")
    tokenizer = load_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    base.save_pretrained(root / "base")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (base_encoder_dir() / name).exists():
            shutil.copy(base_encoder_dir() / name, root / "base" / name)
    texts, data = {}, []
    for i, task_name in enumerate(TASKS):
        task = load_task(task_name, 0, VARIANTS["tiny"].sizes)
        texts[task_name] = list(task.splits["validation"].texts[:24])
        tune = LlamaForCausalLM.from_pretrained(root / "base")
        optimizer = torch.optim.AdamW(tune.parameters(), lr=3e-3)
        train = list(task.splits["train"].texts[:64])
        for step in range(30):
            batch = tokenizer(train[(step * 8) % 64:(step * 8) % 64 + 8], padding=True, truncation=True,
                              max_length=48, return_tensors="pt")
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            tune(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        tune.save_pretrained(root / f"ft_{task_name}")
        data.append(root / f"{task_name}.jsonl")
        data[-1].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[task_name]))
    spec = {"method": "task_arithmetic", "base": str(root / "base"),
            "models": [{"path": str(root / f"ft_{t}")} for t in TASKS]}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root, data, texts, tokenizer


def learn(*args, cwd=None):
    return subprocess.run([SCRIPT, "learn", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "TASKFUSE_CACHE": os.environ.get("TASKFUSE_CACHE", "/tmp/unused")})


def test_atlas_on_a_spec_lowers_each_tasks_loss_and_writes_a_loadable_replayable_merge(lm_family, tmp_path):
    from transformers import AutoModelForCausalLM

    root, data, texts, tokenizer = lm_family
    done = learn("atlas", "--spec", root / "spec.yaml", "--data", data[0], "--data", data[1], "--steps", "12",
                 "--lr", "0.1", "-o", tmp_path / "merged")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "merged" / "taskfuse_learned.json").read_text())
    assert [d["examples"] for d in record["data_seen"]] == [len(texts[t]) for t in TASKS]
    assert all(d["labels"] for d in record["data_seen"]) and record["losses"][-1] < record["losses"][0]
    assert record["memory"]["task_vectors_mib"] >= 0 and (tmp_path / "merged" / "coefficients.png").exists()
    assert record["gradient_step"] == "recomputed"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    for task_name in TASKS:  # Λ starts at 0 (the base): learning must have improved every task
        assert mean_loss(merged, tokenizer, texts[task_name]) < mean_loss(base, tokenizer, texts[task_name])
    replay = subprocess.run([SCRIPT, "merge", tmp_path / "merged" / "taskfuse_spec.yaml", "-o", tmp_path / "again"],
                            capture_output=True, text=True)
    assert replay.returncode == 0, replay.stderr
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "merged" / "model.safetensors").read_bytes()


def test_adamerging_on_a_spec_reads_no_completion(lm_family, tmp_path):
    root, data, _, _ = lm_family
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "gloss:", "completion": "never read"}) + "\n" + json.dumps({"text": "a b c"}) + "\n")
    done = learn("adamerging_task", "--spec", root / "spec.yaml", "--data", prompts, "--data", data[1], "--steps", "2",
                 "-o", tmp_path / "merged")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "merged" / "taskfuse_learned.json").read_text())
    assert record["data_seen"][0] == {"file": str(prompts), "examples": 2, "labels": False,
                                      "tokens": record["data_seen"][0]["tokens"], "max_tokens": 256}
    assert 0.0 <= min(record["coefficients"]["*"]) and max(record["coefficients"]["*"]) <= 1.0


@pytest.mark.parametrize("case, message", [
    ("one_file", "names 2 models"),
    ("bad_line", "bad.jsonl:2: not JSON"),
    ("fewshot", "k examples per class"),
    ("self_positioning", "Self Positioning for embedding models"),
    ("missing", "does not exist"),
])
def test_bad_learning_input_is_a_typed_error_and_writes_nothing(lm_family, tmp_path, case, message):
    root, data, _, _ = lm_family
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n{oops\n")
    files = {"one_file": [data[0]], "bad_line": [data[0], bad], "fewshot": data, "self_positioning": data,
             "missing": [data[0], tmp_path / "nope.jsonl"]}[case]
    method = {"fewshot": "atlas_fewshot", "self_positioning": "self_positioning"}.get(case, "atlas")
    args = [a for f in files for a in ("--data", f)]
    done = learn(method, "--spec", root / "spec.yaml", *args, "--steps", "1", "-o", tmp_path / "out")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_learning_from_a_merge_starts_at_that_merge_and_replays_with_it(lm_family, tmp_path):
    """--start: the merge's task vector enters first at 1 and the models' at 0, so a step too small to move
    anything writes the start merge back; learning then lowers the loss from there, and the replay spec names the
    start as its first model."""
    from transformers import AutoModelForCausalLM

    root, data, texts, tokenizer = lm_family
    start = subprocess.run([SCRIPT, "merge", root / "spec.yaml", "-o", tmp_path / "start"], capture_output=True,
                           text=True)
    assert start.returncode == 0, start.stderr
    args = ("--spec", root / "spec.yaml", "--data", data[0], "--data", data[1], "--start", tmp_path / "start")
    still = learn("atlas", *args, "--steps", "1", "--lr", "1e-12", "-o", tmp_path / "still")
    assert still.returncode == 0, still.stderr
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "still").state_dict()
    for name, value in AutoModelForCausalLM.from_pretrained(tmp_path / "start").state_dict().items():
        torch.testing.assert_close(merged[name], value, rtol=0, atol=1e-6, msg=name)
    done = learn("atlas", *args, "--steps", "8", "--lr", "0.05", "-o", tmp_path / "learned")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "learned" / "taskfuse_learned.json").read_text())
    assert record["start"] == str((tmp_path / "start").resolve()) and record["tasks"][0] == record["start"]
    assert record["losses"][-1] < record["losses"][0]
    replay = yaml.safe_load((tmp_path / "learned" / "taskfuse_spec.yaml").read_text())
    assert [m["path"] for m in replay["models"]] == record["tasks"] and len(replay["models"]) == 3
    again = subprocess.run([SCRIPT, "merge", tmp_path / "learned" / "taskfuse_spec.yaml", "-o", tmp_path / "again"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (tmp_path / "learned" / "model.safetensors").read_bytes()
    learned_model = AutoModelForCausalLM.from_pretrained(tmp_path / "learned")
    start_model = AutoModelForCausalLM.from_pretrained(tmp_path / "start")
    both = texts[TASKS[0]] + texts[TASKS[1]]
    assert mean_loss(learned_model, tokenizer, both) < mean_loss(start_model, tokenizer, both)


@pytest.mark.parametrize("case, message", [
    ("into_start", "would replace the start merge"),
    ("above_start", "would replace the start merge"),
    ("ties", "cannot be TIES-trimmed"),
    ("no_spec", "--start goes with --spec"),
    ("missing", "does not exist. Fix: give the folder a merge"),
    ("other_shape", "model.embed_tokens.weight has shape"),
])
def test_a_start_merge_is_never_overwritten_and_bad_starts_are_typed_errors(lm_family, tmp_path, case, message):
    root, data, _, _ = lm_family
    start = tmp_path / "folder" / "start"
    made = subprocess.run([SCRIPT, "merge", root / "spec.yaml", "-o", start], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    before = {p.name: p.read_bytes() for p in start.iterdir()}
    out = {"into_start": start, "above_start": tmp_path / "folder"}.get(case, tmp_path / "out")
    method = "adamerging_layer_ties" if case == "ties" else "atlas"
    spec_args = [] if case == "no_spec" else ["--spec", root / "spec.yaml", "--data", data[0], "--data", data[1]]
    given = {"missing": tmp_path / "no-such-merge", "other_shape": tmp_path / "wider"}.get(case, start)
    if case == "other_shape":  # a start with 8 more tokens than the base: its embeddings cannot join the view
        from transformers import AutoModelForCausalLM
        wider = AutoModelForCausalLM.from_pretrained(start)
        wider.resize_token_embeddings(wider.config.vocab_size + 8)
        wider.save_pretrained(given)
    done = learn(method, *spec_args, "--start", given, "--steps", "1", "-o", out)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert {p.name: p.read_bytes() for p in start.iterdir()} == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", [["--task-file", "tasks.jsonl"], ["--variant", "full"]])
def test_the_zoos_options_beside_a_spec_are_refused_not_ignored(lm_family, tmp_path, option):
    root, data, _, _ = lm_family
    done = learn("atlas", "--spec", root / "spec.yaml", "--data", data[0], "--data", data[1], *option,
                 "--steps", "1", "-o", tmp_path / "out")
    assert done.returncode == 2 and f"{option[0]} chooses the benchmark zoo's" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_peft_adapter_in_the_spec_learns_from_its_exact_update(lm_family, tmp_path):
    """A model given as BASE+ADAPTER (as in a merge) enters as its exact update W + scaling·B·A, the same task vector
    PEFT's own merge gives, and `learn --spec` runs on it."""
    import warnings

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from taskfuse.io.checkpoint import Checkpoint
    from taskfuse.programs.spec_learning import task_vector
    root, data, _, _ = lm_family
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"),
                              LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"],
                                         init_lora_weights=False))
        peft.save_pretrained(tmp_path / "adapter")
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "base"),
                                           tmp_path / "adapter").merge_and_unload()
    theta0 = {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(root / "base").named_parameters()}
    ours = task_vector(Checkpoint.open(f"{root / 'base'}+{tmp_path / 'adapter'}"), theta0, "adapter")
    assert ours.keys() == theta0.keys()
    changed = 0
    for name, p in merged.named_parameters():
        torch.testing.assert_close(ours[name], p.detach() - theta0[name], rtol=0, atol=1e-6, msg=name)
        changed += bool(ours[name].abs().max() > 1e-4)
    assert changed == 2 * 2  # q_proj and up_proj in each of the two layers
    spec = yaml.safe_load((root / "spec.yaml").read_text())
    spec["models"][0]["path"] = f"{root / 'base'}+{tmp_path / 'adapter'}"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = learn("atlas", "--spec", tmp_path / "spec.yaml", "--data", data[0], "--data", data[1], "--steps", "2",
                 "-o", tmp_path / "merged")
    assert done.returncode == 0, done.stderr


def test_scored_logits_with_a_shared_opening_equal_the_full_forward_in_value_and_gradient(lm_family):
    """Prompt/completion rows of one task share their opening: it runs once and only scored positions reach the
    output layer, yet the logits and the gradients they send back are the plain forward pass's."""
    from transformers import AutoModelForCausalLM

    from taskfuse.programs.text_data import TextExamples, batches_in_order, scored_logits

    root, _, texts, tokenizer = lm_family
    model = AutoModelForCausalLM.from_pretrained(root / "base")
    opening = tokenizer("Which part of speech is the word defined as", add_special_tokens=True)["input_ids"][:-1]
    rows, starts = [], []
    for i, text in enumerate(texts["wordnet_pos"][:5]):
        prompt = opening + tokenizer(text, add_special_tokens=False)["input_ids"][:6 + 2 * i]
        rows.append(tuple(prompt + tokenizer("noun", add_special_tokens=False)["input_ids"]))
        starts.append(len(prompt) - 1)
    inputs, targets = next(batches_in_order(TextExamples("x", tuple(rows), tuple(starts)), 5, 0))
    assert inputs["shared"] == len(opening)
    full = model(input_ids=inputs["ids"], attention_mask=inputs["mask"]).logits[:, :-1][inputs["scored"]]
    full_grad = torch.autograd.grad(full.log_softmax(-1).gather(1, targets[:, None]).sum(),
                                    model.model.layers[0].self_attn.q_proj.weight)[0]
    fast = scored_logits(model, inputs)
    fast_grad = torch.autograd.grad(fast.log_softmax(-1).gather(1, targets[:, None]).sum(),
                                    model.model.layers[0].self_attn.q_proj.weight)[0]
    assert fast.shape == full.shape == (len(targets), model.config.vocab_size)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast_grad, full_grad, atol=1e-5, rtol=1e-4)
    assert full_grad.abs().sum() > 0


def test_both_gradient_steps_learn_the_same_coefficients_on_a_spec(lm_family):
    """`taskfuse learn --spec` runs the memory-lean step; the merged-once step learns the same (float32, summation
    order apart), the LLM objectives' shared-opening cache included."""
    from taskfuse import api
    from taskfuse.bench.learned import learned_method
    from taskfuse.programs.spec_learning import SpecLearning, learn_for_spec

    root, data, _, _ = lm_family
    method = learned_method("atlas", 4, 0.1)
    spec = api.as_spec(yaml.safe_load((root / "spec.yaml").read_text()))
    runs = {step: learn_for_spec(spec, [str(d) for d in data], SpecLearning(method.parameterization, method.recipe,
                                                                           method.init, batch_size=4, step=step))
            for step in ("recomputed", "merged-once")}
    assert SpecLearning(method.parameterization, method.recipe, method.init).step == "recomputed"
    assert runs["recomputed"].losses == pytest.approx(runs["merged-once"].losses, rel=1e-4)
    assert runs["recomputed"].losses[-1] < runs["recomputed"].losses[0]
    torch.testing.assert_close(runs["recomputed"].view.coefficients, runs["merged-once"].view.coefficients,
                               rtol=1e-3, atol=1e-4)


def test_atlas_with_partitions_learns_from_a_merge_and_writes_a_replayable_spec(lm_family, tmp_path):
    """--partitions K (aTLAS×K): each tensor's coefficients split over K seeded random partitions; the record keeps
    all of them, the map their mean, and the replay spec (partitioned_task_arithmetic) writes the same bytes."""
    from transformers import AutoModelForCausalLM

    root, data, texts, tokenizer = lm_family
    start = subprocess.run([SCRIPT, "merge", root / "spec.yaml", "-o", tmp_path / "start"], capture_output=True,
                           text=True)
    assert start.returncode == 0, start.stderr
    done = learn("atlas", "--spec", root / "spec.yaml", "--data", data[0], "--data", data[1], "--start",
                 tmp_path / "start", "--partitions", "3", "--partition-seed", "4", "--steps", "8", "--lr", "0.05",
                 "-o", tmp_path / "learned")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "learned" / "taskfuse_learned.json").read_text())
    assert record["learning"]["parameterization"] == {"kind": "partition", "partitions": 3, "seed": 4}
    assert record["losses"][-1] < record["losses"][0]
    rows = record["partition_coefficients"]
    assert set(rows) == set(record["coefficients"]) and all(len(r) == 3 for r in rows.values())
    for name, per_model in rows.items():  # the map's value is the partitions' mean
        assert record["coefficients"][name] == pytest.approx([sum(per_model[str(t)]) / 3 for t in range(3)])
    assert any(len(set(row)) > 1 for per_model in rows.values() for row in per_model.values())  # they differ
    assert (tmp_path / "learned" / "coefficients.png").read_bytes()[:4] == b"\x89PNG"
    replay = yaml.safe_load((tmp_path / "learned" / "taskfuse_spec.yaml").read_text())
    assert replay["method"] == "partitioned_task_arithmetic" and replay["params"]["partition_seed"] == 4
    assert [m["path"] for m in replay["models"]] == record["tasks"] == [record["start"], *replay_paths(root)]
    again = subprocess.run([SCRIPT, "merge", tmp_path / "learned" / "taskfuse_spec.yaml", "-o", tmp_path / "again"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (tmp_path / "learned" / "model.safetensors").read_bytes()
    both = texts[TASKS[0]] + texts[TASKS[1]]
    assert mean_loss(AutoModelForCausalLM.from_pretrained(tmp_path / "learned"), tokenizer, both) < \
        mean_loss(AutoModelForCausalLM.from_pretrained(tmp_path / "start"), tokenizer, both)


def replay_paths(root):
    return [m["path"] for m in yaml.safe_load((root / "spec.yaml").read_text())["models"]]


@pytest.mark.parametrize("method", ["adamerging_layer_ties", "adamerging_task", "self_positioning"])
def test_partitions_for_a_method_that_cannot_take_them_are_refused_first(lm_family, tmp_path, method):
    root, data, _, _ = lm_family
    done = learn(method, "--spec", root / "spec.yaml", "--data", data[0], "--data", data[1], "--partitions", "2",
                 "-o", tmp_path / "out")
    assert done.returncode == 2 and "cannot learn per partition" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_adamerging_over_dare_dropped_vectors_of_a_spec_replays_as_a_dare_merge(lm_family, tmp_path):
    root, data, _, _ = lm_family
    args = ("--spec", root / "spec.yaml", "--data", data[0], "--data", data[1], "--sparsify", "dare_linear",
            "--sparsify-param", "density=0.5")
    done = learn("adamerging_layer", *args, "--steps", "4", "-o", tmp_path / "learned")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "learned" / "taskfuse_learned.json").read_text())
    assert record["sparsify"] == {"method": "dare_linear", "params": {"density": 0.5}}
    replay = yaml.safe_load((tmp_path / "learned" / "taskfuse_spec.yaml").read_text())
    assert replay["method"] == "dare_linear" and replay["params"] == {"density": 0.5}
    again = subprocess.run([SCRIPT, "merge", tmp_path / "learned" / "taskfuse_spec.yaml", "-o", tmp_path / "again"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (tmp_path / "learned" / "model.safetensors").read_bytes()
    start = subprocess.run([SCRIPT, "merge", root / "spec.yaml", "-o", tmp_path / "start"], capture_output=True,
                           text=True)
    assert start.returncode == 0, start.stderr
    refused = learn("adamerging_layer", *args, "--start", tmp_path / "start", "-o", tmp_path / "no")
    assert refused.returncode == 2 and "cannot be pre-processed by dare_linear" in refused.stderr
    assert not (tmp_path / "no").exists()
