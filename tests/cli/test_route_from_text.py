"""`taskfuse route phatgoose|lorahub|mhr`: composition learnt from text (a real tiny Llama with its
fortunes), written as a routed model that loads back and routes; bad data fails before anything is written."""
import json

import pytest
import torch

from taskfuse.routing.phatgoose import PhatgooseRouter
from taskfuse.routing.store import load_routed
from taskfuse.testing.tiny_llm import fortune_texts, save_tiny_causal_lm
from tests.cli.test_user_errors import assert_user_error, taskfuse
from tests.routing.test_arrow import dominant_adapter


@pytest.fixture(scope="module")
def llama_library(tmp_path_factory):
    """A tiny Llama with a tokenizer, two adapters, and each adapter's text: plain fortunes for one, prompt and
    completion pairs for the other."""
    root = tmp_path_factory.mktemp("phatgoose")
    base = save_tiny_causal_lm(root / "base", "llama", seed=0)
    adapters = {name: dominant_adapter(base, root / name, seed) for seed, name in enumerate(("quotes", "authors"))}
    fortunes = [f for f in fortune_texts(200) if 40 < len(f) < 300]
    (root / "quotes.jsonl").write_text("".join(json.dumps({"text": f}) + "\n" for f in fortunes[:24]))
    (root / "authors.jsonl").write_text("".join(json.dumps({"prompt": f"Who might say: {f}\n", "completion": "A sage."})
                                                + "\n" for f in fortunes[24:48]))
    return base, adapters, root


def test_phatgoose_trains_gates_on_each_adapters_text_and_the_model_loads_and_routes(tmp_path, llama_library):
    base, adapters, root = llama_library
    done = taskfuse("route", "phatgoose", "--base", base, *[f"--adapter={n}={p}" for n, p in adapters.items()],
                    "--data", f"quotes={root / 'quotes.jsonl'}", "--data", f"authors={root / 'authors.jsonl'}",
                    "--steps", "20", "--lr", "1e-2", "-o", tmp_path / "routed")
    assert done.returncode == 0, done.stderr
    assert "PHATGOOSE over 2 adapters (quotes, authors)" in " ".join(done.stderr.split())
    manifest = json.loads((tmp_path / "routed" / "manifest.json").read_text())
    assert manifest["router"] == "phatgoose" and manifest["router_params"] == {"top_k": 2}
    assert {n: manifest["data_seen"][n]["examples"] for n in adapters} == {"quotes": 24, "authors": 24}
    for name in adapters:  # every step's loss recorded; switching a random update off and on lowers it
        losses = manifest["gate_training"][name]["losses"]
        assert len(losses) == 20 and all(x == x for x in losses)
        assert sum(losses[-5:]) < sum(losses[:5]), (name, losses)
    model = load_routed(tmp_path / "routed")
    routers = [m for m in model.modules() if isinstance(m, PhatgooseRouter)]
    assert routers and all(r.top_k == 2 for r in routers)
    for router in routers:  # each adapter's gate learnt (they start at zero), and differently
        assert (router.gates.abs().sum(1) > 0).all()
        assert not torch.equal(router.gates[0], router.gates[1])
    from transformers import AutoModelForCausalLM
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        routed, plain = model(input_ids=ids).logits, AutoModelForCausalLM.from_pretrained(base)(input_ids=ids).logits
    assert torch.isfinite(routed).all() and not torch.allclose(routed, plain, atol=1e-4)


def test_phatgoose_refuses_bad_data_before_writing(tmp_path, llama_library, bert_family):
    base, adapters, root = llama_library
    both = [f"--adapter={n}={p}" for n, p in adapters.items()]
    out = tmp_path / "x"
    assert_user_error(taskfuse("route", "phatgoose", "--base", base, *both, "--data", f"quotes={root / 'quotes.jsonl'}",
                               "-o", out), "authors have no --data")
    assert_user_error(taskfuse("route", "phatgoose", "--base", base, *both, "--data", f"quotes={root / 'quotes.jsonl'}",
                               "--data", f"poems={root / 'quotes.jsonl'}", "-o", out), "--data for poems")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"prompt": 3}\n')
    assert_user_error(taskfuse("route", "phatgoose", "--base", base, *both, "--data", f"quotes={tmp_path / 'bad.jsonl'}",
                               "--data", f"authors={root / 'authors.jsonl'}", "-o", out), "bad.jsonl:2")
    assert_user_error(taskfuse("route", "phatgoose", "--base", bert_family[0], "--adapter", adapters["quotes"],
                               "--data", f"quotes={root / 'quotes.jsonl'}", "-o", out), "not a causal LM")
    assert_user_error(taskfuse("route", "arrow", "--base", base, *both, "--data", f"quotes={root / 'quotes.jsonl'}",
                               "-o", out), "arrow does not take --data")
    assert_user_error(taskfuse("route", "phatgoose", "--base", base, *both, "--data", f"quotes={root / 'quotes.jsonl'}",
                               "--skills", "--budget", "9", "-o", out), "phatgoose does not take --budget, --skills")
    assert not out.exists()


def test_lorahub_writes_the_searched_weighted_sum_as_one_peft_adapter(tmp_path, llama_library):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from taskfuse.routing.library import LoraLibrary
    from taskfuse.routing.weighted import WeightedMixture
    base, adapters, root = llama_library
    done = taskfuse("route", "lorahub", "--base", base, *[f"--adapter={n}={p}" for n, p in adapters.items()],
                    "--data", root / "authors.jsonl", "--budget", "12", "-o", tmp_path / "hub")
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "hub" / "taskfuse_adapter.json").read_text())["lorahub"]
    assert found["evaluations"] == 12 and found["data_seen"]["examples"] == 24 and found["search"]["seed"] == 0
    # the search starts at the base and keeps the best: never worse than the base on the examples
    assert found["objective"] < found["objective_at_start"] and found["history"] == sorted(found["history"],
                                                                                             reverse=True)
    weights = [found["weights"][n] for n in adapters]
    assert any(weights) and all(abs(w) <= 1.5 for w in weights)
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "hub").eval()
        mixture = WeightedMixture(AutoModelForCausalLM.from_pretrained(base).eval(),
                                  LoraLibrary.from_adapters(base, adapters))
        torch.testing.assert_close(theirs(input_ids=ids).logits, mixture.set(weights)(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)
    assert_user_error(taskfuse("route", "lorahub", "--base", base, "--adapter", adapters["quotes"], "--data",
                               root / "authors.jsonl", "--data", root / "quotes.jsonl", "-o", tmp_path / "y"),
                      "one --data FILE.jsonl")
    assert_user_error(taskfuse("route", "lorahub", "--base", base, "--adapter", adapters["quotes"], "--data",
                               root / "authors.jsonl", "-o", tmp_path / "y"), "1 given", "two or more --adapter")
    assert not (tmp_path / "y").exists()


def test_lorahub_then_fine_tuned_starts_from_the_weighted_adapter_and_fits_the_examples(tmp_path, llama_library):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from taskfuse.programs.library_text import all_batches, mean_loss, pad_id, tokenizer_of
    from taskfuse.programs.text_data import read_examples
    base, adapters, root = llama_library
    both = [f"--adapter={n}={p}" for n, p in adapters.items()]
    common = ("--data", root / "authors.jsonl", "--budget", "12")
    assert taskfuse("route", "lorahub", "--base", base, *both, *common, "-o", tmp_path / "hub").returncode == 0
    done = taskfuse("route", "lorahub", "--base", base, *both, *common, "--finetune-steps", "8", "-o", tmp_path / "tuned")
    assert done.returncode == 0, done.stderr
    assert "then fine-tuned for 8 steps" in " ".join(done.stderr.split())
    report = json.loads((tmp_path / "tuned" / "taskfuse_adapter.json").read_text())
    hub = json.loads((tmp_path / "hub" / "taskfuse_adapter.json").read_text())
    assert report["lorahub"]["weights"] == hub["lorahub"]["weights"]  # the same search, the start recorded
    tuning = report["finetune"]
    assert len(tuning["losses"]) == 8 and tuning["data_seen"]["seed"] == 0 and tuning["data_seen"]["examples"] == 24
    start, tuned = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("hub", "tuned"))
    # PEFT prefixes its saved names differently from ours: compare the factors by shape, in order
    assert sorted(t.shape for t in start.values()) == sorted(t.shape for t in tuned.values())  # the start's ranks
    tok = tokenizer_of(base)
    batches = all_batches(read_examples(root / "authors.jsonl", tok, labelled=True), 8, pad_id(tok))
    loss = {d: mean_loss(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base).float(),
                                                   tmp_path / d).eval().get_base_model(), batches)
            for d in ("hub", "tuned")}
    assert loss["tuned"] < loss["hub"], loss  # the fine-tuning fitted the examples beyond what weighing reached
    again = taskfuse("route", "lorahub", "--base", base, *both, *common, "--finetune-steps", "8", "--seed", "1",
                     "-o", tmp_path / "tuned1")
    assert again.returncode == 0, again.stderr
    other = json.loads((tmp_path / "tuned1" / "taskfuse_adapter.json").read_text())["finetune"]
    assert other["data_seen"]["seed"] == 1 and other["losses"] != tuning["losses"]  # another batch order
    assert_user_error(taskfuse("route", "mhr", "--base", base, *both, "--data", root / "authors.jsonl",
                               "--finetune-steps", "3", "-o", tmp_path / "z"), "mhr does not take --finetune-steps")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert_user_error(taskfuse("route", "lorahub", "--base", base, *both, *common, "--finetune-steps", "3",
                               "-o", tmp_path / "mine"), "taskfuse never replaces")
    assert not (tmp_path / "z").exists() and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("skills", [False, True])
def test_mhr_adapts_to_a_new_tasks_examples_and_loads_back(tmp_path, llama_library, skills):
    from transformers import AutoModelForCausalLM

    from taskfuse.routing.library import LoraLibrary
    from taskfuse.routing.mhr import mhr_modules, route_mhr
    base, adapters, root = llama_library
    done = taskfuse("route", "mhr", "--base", base, *[f"--adapter={n}={p}" for n, p in adapters.items()],
                    "--data", root / "authors.jsonl", "--steps", "15", *(["--skills"] if skills else []),
                    "-o", tmp_path / "mhr")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "mhr" / "manifest.json").read_text())
    assert manifest["router_params"] == {"heads": 8, "tasks": 1}
    assert manifest["adaptation"]["learnt"] == ("routing and skills" if skills else "routing")
    losses = manifest["adaptation"]["losses"]
    assert len(losses) == 15 and all(x == x for x in losses)
    if skills:  # the factors fit the examples; routing alone only remixes random updates (and samples while it learns)
        assert sum(losses[-5:]) < sum(losses[:5]), losses
    model = load_routed(tmp_path / "mhr")
    fresh = route_mhr(AutoModelForCausalLM.from_pretrained(base), LoraLibrary.from_adapters(base, adapters), 8)
    for loaded, start in zip(mhr_modules(model), mhr_modules(fresh)):
        assert not torch.equal(loaded.logits, start.logits)  # the routing learnt (it starts at zero)
        assert torch.equal(loaded.skill_a, start.skill_a) != skills  # the factors learnt only with --skills
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    assert manifest["data_seen"]["seed"] == 0
    if not skills:  # another seed orders the batches and samples the routing differently, and says so
        again = taskfuse("route", "mhr", "--base", base, *[f"--adapter={n}={p}" for n, p in adapters.items()],
                         "--data", root / "authors.jsonl", "--steps", "15", "--seed", "1", "-o", tmp_path / "mhr1")
        assert again.returncode == 0, again.stderr
        assert json.loads((tmp_path / "mhr1" / "manifest.json").read_text())["data_seen"]["seed"] == 1
        other = load_routed(tmp_path / "mhr1")
        assert not all(torch.equal(a.logits, b.logits) for a, b in zip(mhr_modules(model), mhr_modules(other)))
    assert_user_error(taskfuse("route", "mhr", "--base", base, "--adapter", adapters["quotes"], "-o", tmp_path / "z"),
                      "mhr needs --data")
    assert_user_error(taskfuse("route", "arrow", "--base", base, "--adapter", adapters["quotes"], "--seed", "1",
                               "-o", tmp_path / "z"), "arrow does not take --seed", "mhr/lorahub")
    assert not (tmp_path / "z").exists()
