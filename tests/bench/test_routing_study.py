"""The routing study on the tiny zoo's real LoRA experts: every row present, LoraHub never worse than the base on
its own examples, a user's task file held out from the whole library, the report written with its figure."""
import json
from pathlib import Path

import pytest

from taskfuse.bench.routing_report import write_routing_report
from taskfuse.bench.routing_study import run_routing
from taskfuse.routing.lorahub import LoraHubSearch

# the task file the published study holds out: real WordNet verb glosses, a task no built-in one is
TASK_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "tasks" / "wordnet_verb_topic.jsonl"


@pytest.fixture(scope="module")
def routing(tiny_bench, tmp_path_factory):
    *_, cache = tiny_bench  # the tiny zoo's experts are already built there
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKFUSE_CACHE", str(cache))
        result = run_routing("tiny", lorahub=LoraHubSearch(budget=9), kshot_steps=6, mhr_steps=6,
                             task_files=(str(TASK_FILE),))
        yield result, write_routing_report(result, tmp_path_factory.mktemp("routing") / "report")


def test_every_row_is_scored_on_every_task(routing):
    result, _ = routing
    tasks = [t["task"] for t in result["new_task"] if not t.get("task_file")]
    assert tasks == ["wordnet_pos", "fortune_language"]
    user = result["new_task"][-1]
    assert user["task"] == "wordnet_verb_topic" and user["task_file"] and user["library"] == tasks  # all of it
    assert 0 < user["expert_accuracy"] <= 1 and user["normalized"]["lora_expert"] > 0
    # the built-in tasks' average and wins leave the user's task out; it is reported beside them
    assert result["summary"]["tasks"] == 2 and set(result["summary"]["task_file_normalized"]) == {user["task"]}
    for row in result["new_task"][:-1]:
        assert row["library"] == [t for t in tasks if t != row["task"]]  # the held-out adapter is not there
    for row in result["new_task"]:
        assert set(row["accuracy"]) == {"zero_shot", "lora_expert", "arrow", "phatgoose", "average", "lorahub", "lorahub_tuned",
                                       "mhr", "mhr_skills", "kshot_lora"}
        assert all(0 <= v <= 1 for v in row["accuracy"].values())
        assert row["lorahub"]["evaluations"] <= 9
    rows = {r["method"]: r for r in result["multitask"]}
    assert list(rows) == ["arrow", "lora_task_arithmetic", "phatgoose", "twin_merging",
                          "twin_merging_task_given", "twin_merging_calibrated", "emr_merging", "mhr"]
    # calibrated Twin-Merging: the temperature with the least held-out loss, the parts' scales validation chose
    calibrated = rows["twin_merging_calibrated"]
    losses = calibrated["temperature_validation_loss"]
    assert losses[calibrated["temperature"]] == min(losses.values())
    trials = calibrated["scale_trials"]
    assert len(trials) == 1 + 3 * len(tasks) and set(trials[0]["scales"].values()) == {0.0}
    best = max(trials, key=lambda t: t["validation_normalized"])  # the first of equals: ties keep the earlier
    assert calibrated["part_scales"] == best["scales"]
    assert sorted(calibrated["search_order"]) == sorted(tasks)
    routed = calibrated["router_validation_accuracy"]
    assert [routed[t] for t in calibrated["search_order"]] == sorted(routed.values(), reverse=True)
    assert calibrated["chosen"].startswith("shared iso_cts")
    kept = [t for t, s in best["scales"].items() if s]
    assert calibrated["chosen"].endswith(", ".join(f"{t} {best['scales'][t]:g}" for t in kept) or "none")
    # each task's routing was learnt from its k-shot examples: it left the uniform start (1/2 per adapter)
    assert set(rows["mhr"]["own_adapter_weight"]) == set(tasks)
    assert all(0 < w < 1 and abs(w - 0.5) > 1e-4 for w in rows["mhr"]["own_adapter_weight"].values())
    assert rows["arrow"]["chosen"] in (1, 2, 3, 4) and len(rows["arrow"]["trials"]) == 4
    # Arrow holds the library's factors and one prototype per adapter and module beyond the base
    assert rows["arrow"]["overhead"]["extra_parameters"] > result["library"]["parameters"] > 0
    for method in ("arrow", "phatgoose", "twin_merging", "twin_merging_task_given", "twin_merging_calibrated", "mhr"):
        cost = rows[method]["overhead"]
        # calibrated Twin-Merging holds no part when validation kept none: then only its router (none at all when
        # it is the shared merge alone)
        assert cost["routed_seconds"] > 0 and cost["latency_ratio"] > 0 and (
            cost["extra_parameters"] > 0 or method == "twin_merging_calibrated" and not kept)
    assert rows["lora_task_arithmetic"]["chosen"] in (0.2, 0.4, 0.6, 0.8, 1.0)
    for row in rows.values():
        assert set(row["test_normalized"]) == set(tasks) and 0 < row["average"]["normalized"] <= 1.5
    # EMR serves each task with its own mask and rescaler: on two tasks it is close to the experts
    assert rows["emr_merging"]["average"]["normalized"] > 0.8
    twin = rows["twin_merging"]
    assert set(twin["router_test_accuracy"]) == set(twin["router_trained_on_train_splits_test_accuracy"]) == set(tasks)
    # each task's inputs are spread over the tasks the router sends them to: the shares shown add up to at most 1
    assert all(0 < sum(shares.values()) <= 1 + 1e-6 for shares in twin["router_confusion"].values())
    # told the task, Twin-Merging skips the router's pass over the shared model: cheaper than routing by the input
    assert rows["twin_merging_task_given"]["extra_parameters"] == twin["extra_parameters"]


def test_lorahub_is_never_worse_than_the_base_on_its_examples(routing):
    result, _ = routing
    for row in result["new_task"]:
        # the objective includes the L1 penalty; at w = 0 it is the base's loss on the k-shot examples
        assert row["lorahub"]["objective"] <= row["lorahub"]["objective_at_start"] + 1e-9


def test_the_report(routing):
    result, report = routing
    assert json.loads((report / "result.json").read_text())["summary"] == json.loads(json.dumps(result["summary"]))
    markdown = (report / "results.md").read_text()
    assert "LoraHub (k-shot)" in markdown and "wordnet_verb_topic (task file) acc %" in markdown
    wins = [line.split(" | ")[2] for line in markdown.splitlines() if line.startswith("| Arrow")][-1]
    assert wins.endswith("/2")  # wins counted over the two built-in tasks, not the user's
    assert (report / "new_task.png").stat().st_size > 5000
    assert "data:image/png;base64" in (report / "report.html").read_text()


def test_lorahubs_weighted_adapter_is_the_weighted_sum_exactly_and_trainable(tiny_bench, monkeypatch):
    """The start of the "LoraHub, then fine-tuned" row: one LoRA whose update is Σ wᵢ·ΔWᵢ (against the weighted
    mixture LoraHub scores), rank the kept adapters' summed, only its factors trainable."""
    import torch

    from taskfuse.bench.routing_study import weighted_lora
    from taskfuse.eval.encoder import embed_all, encode, load_encoder, load_tokenizer
    from taskfuse.routing.library import LoraLibrary
    from taskfuse.routing.weighted import WeightedMixture
    from taskfuse.zoo.build import build_zoo
    from taskfuse.zoo.recipe import variant_named
    *_, cache = tiny_bench
    monkeypatch.setenv("TASKFUSE_CACHE", str(cache))
    zoo = build_zoo(variant_named("tiny"))
    library = LoraLibrary.from_adapters(zoo.base_dir, {t: e.lora_dir for t, e in zoo.experts.items()})
    split = next(iter(zoo.tasks.values())).splits["test"]
    data = encode(load_tokenizer(zoo.base_dir), split.texts[:12], split.labels[:12])
    base = embed_all(load_encoder(zoo.base_dir).eval(), data)
    for weights in ([0.8, -0.5], [0.0, 1.3]):
        ours = weighted_lora(load_encoder(zoo.base_dir), library, weights).eval()
        mixture = WeightedMixture(load_encoder(zoo.base_dir).eval(), library).set(weights)
        with torch.no_grad():
            got, want = embed_all(ours, data), embed_all(mixture, data)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(got, base, atol=1e-4)  # the update is there
        kept = [i for i, w in enumerate(weights) if w]
        expected = sum(sum(library.updates(m)[i].a.numel() + library.updates(m)[i].b.numel() for i in kept)
                       for m in library.modules)
        assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == expected
