"""The tiny zoo: real MiniLM experts trained, saved in real formats, cached by content, resumable, parallel."""
import json
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from taskfuse.errors import ZooError
from taskfuse.eval.encoder import base_encoder_dir, load_encoder
from taskfuse.eval.tasks import load_task
from taskfuse.zoo import build as zoo_build
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import VARIANTS
from taskfuse.zoo.store import expert_key

TINY = VARIANTS["tiny"]


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKFUSE_CACHE", str(cache))
        events = []
        zoo = build_zoo(TINY, progress=lambda *a: events.append(a))
        yield zoo, cache, events


def test_every_task_gets_a_full_and_a_lora_expert_in_real_formats(tiny_zoo):
    zoo, _, events = tiny_zoo
    assert set(zoo.experts) == set(TINY.tasks)
    from peft import PeftModel
    for name, expert in zoo.experts.items():
        tuned = load_encoder(expert.model_dir)
        base = load_encoder(base_encoder_dir())
        moved = [n for n, p in tuned.named_parameters() if not torch.equal(p, base.state_dict()[n])]
        assert moved and "embeddings.word_embeddings.weight" not in moved  # frozen table, trained layers
        lora = PeftModel.from_pretrained(load_encoder(base_encoder_dir()), str(expert.lora_dir))
        assert any("lora_B" in n and p.abs().sum() > 0 for n, p in lora.named_parameters())
        assert json.loads((expert.lora_dir / "adapter_config.json").read_text())["r"] == TINY.recipe.lora_rank
        head = load_file(expert.path / "head.safetensors")
        assert head["weight"].shape == (zoo.tasks[name].num_labels, 384)
        assert (name, "done", 1, 1) in events


def test_a_second_build_finds_every_expert_in_the_cache(tiny_zoo, monkeypatch):
    zoo, cache, _ = tiny_zoo
    monkeypatch.setenv("TASKFUSE_CACHE", str(cache))
    events = []
    again = build_zoo(TINY, progress=lambda *a: events.append(a))
    assert {e[0] for e in events if e[1] == "cached"} == set(TINY.tasks)
    assert {n: e.path for n, e in again.experts.items()} == {n: e.path for n, e in zoo.experts.items()}


def test_the_key_changes_with_data_and_recipe():
    task, other = load_task("wordnet_pos", 0, TINY.sizes), load_task("wordnet_pos", 1, TINY.sizes)
    base = base_encoder_dir()
    assert expert_key(task, base, TINY.recipe) != expert_key(other, base, TINY.recipe)
    from dataclasses import replace
    assert expert_key(task, base, TINY.recipe) != expert_key(task, base, replace(TINY.recipe, lr=2e-4))


def test_an_interrupted_build_leaves_nothing_half_written_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path))
    real_save = zoo_build.save_file
    calls = {"n": 0}

    def interrupt_while_writing_the_second_expert(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # its encoder and adapter are already in the staging folder
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(zoo_build, "save_file", interrupt_while_writing_the_second_expert)
    with pytest.raises(KeyboardInterrupt):
        build_zoo(TINY)
    entries = list((tmp_path / "experts").iterdir())
    finished = [p for p in entries if p.is_dir()]
    assert len(finished) == 1 and (finished[0] / "expert.json").exists()
    assert not [p for p in entries if "partial" in p.name]
    monkeypatch.setattr(zoo_build, "save_file", real_save)
    events = []
    build_zoo(TINY, progress=lambda *a: events.append(a))
    assert len([e for e in events if e[1] == "cached"]) == 1 and len([e for e in events if e[1] == "done"]) == 1


def test_two_worker_processes_build_the_same_zoo_as_one(tiny_zoo, tmp_path, monkeypatch):
    zoo, _, _ = tiny_zoo
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path))
    parallel = build_zoo(TINY, workers=2)
    for name, expert in parallel.experts.items():
        assert expert.path.name == zoo.experts[name].path.name
        ours, theirs = load_file(expert.path / "head.safetensors"), load_file(zoo.experts[name].path / "head.safetensors")
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # thread counts differ: float order only
        a = load_file(expert.model_dir / "model.safetensors")
        b = load_file(zoo.experts[name].model_dir / "model.safetensors")
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_a_worker_that_raises_fails_the_build_with_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path))
    tasks = [load_task(n, 0, TINY.sizes) for n in TINY.tasks]
    started = time.monotonic()
    with pytest.raises(ZooError, match="zoo worker . failed: FileNotFoundError.*no-such-base"):
        zoo_build._build_in_processes(tasks, tmp_path / "no-such-base", TINY.recipe, 2, None)
    assert time.monotonic() - started < 60


def test_a_worker_killed_from_outside_fails_the_build_instead_of_hanging(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path))
    killed = []

    def workers():
        return [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]

    def kill_a_worker_once_training(task, stage, done, total):
        if stage == "full" and not killed:
            victim = workers()[-1]
            victim.kill()  # SIGKILL, as the OOM killer sends: the worker can say nothing
            killed.append(victim.pid)

    with pytest.raises(ZooError, match="killed by signal 9"):
        build_zoo(TINY, workers=2, progress=kill_a_worker_once_training)
    assert killed and not workers()  # the surviving worker was stopped too
    assert not [p.name for p in (tmp_path / "experts").iterdir() if "partial" in p.name]
