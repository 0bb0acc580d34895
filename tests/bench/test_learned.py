"""Learned rows of the benchmark and `taskfuse learn`: what they saw, and that the written merge is the learned one."""
import json
import os
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import load_file

from taskfuse import api
from taskfuse.bench.learned import LEARNED, LearnedMethod, learn_on_zoo, learned_method
from taskfuse.bench.learned_row import write_learned
from taskfuse.bench.search_rows import SEARCH_ROWS
from taskfuse.bench.statistics_rows import STATISTICS_ROWS
from taskfuse.errors import UsageError
from taskfuse.programs.learn import Recipe
from taskfuse.programs.learned_spec import learned_spec
from taskfuse.programs.merge_view import Parameterization
from taskfuse.zoo.recipe import VARIANTS
from tests.cli.test_user_errors import SCRIPT
from tests.io.test_output import assert_untouched, foreign_folder


def test_every_learned_row_says_what_data_it_saw_and_is_scored_from_its_spec(tiny_bench):
    result = tiny_bench[0]
    rows = {r["method"]: r for r in result["learned"] if r["method"] in LEARNED}
    assert set(rows) == set(LEARNED)
    validation = {t["name"]: t["sizes"]["validation"] for t in result["tasks"]}
    assert rows["adamerging_layer"]["data_seen"] == {"split": "validation", "labels": False, "examples": validation,
                                                     "per_class": None}
    assert rows["atlas"]["data_seen"]["labels"] is True
    few = rows["atlas_fewshot"]["data_seen"]
    assert few["per_class"] == 16 and all(few["examples"][t] <= validation[t] for t in validation)
    for row in rows.values():
        assert len(row["losses"]) == VARIANTS["tiny"].learn_steps and row["seconds"]["learn"] > 0
        replayed_by = ("self_positioning" if row["learning"]["interpolation"] == "slerp" else "ties"
                       if row["learning"]["ties_density"] is not None else "task_arithmetic")  # AdaMerging++: ties
        assert row["spec"]["method"] == replayed_by and 0.0 <= row["average"]["accuracy"] <= 1.0
        assert row["memory"]["task_vectors_mib"] > 0
    table = (tiny_bench[1] / "results.md").read_text()
    assert "| atlas (learned) | objective=cross_entropy, coefficients=layer" in table
    assert "unlabelled validation inputs" in table
    positioned = rows["self_positioning"]
    assert positioned["data_seen"]["per_class"] == 16 and positioned["params"]["scale"] > 0
    assert positioned["spec"]["params"]["scale"] == pytest.approx(positioned["params"]["scale"], abs=1e-3)
    assert sum(m["weight"] for m in positioned["spec"]["models"]) == pytest.approx(1.0)


def test_statistics_rows_say_what_they_saw_and_their_specs_replay(tiny_bench, tmp_path):
    """RegMean, RegMean++ and Fisher rows: unlabelled inputs for the Grams, labels for the empirical Fisher (and to
    choose between it and FusionBench's estimator); the statistics folders the row's spec names are kept, so
    `taskfuse merge` replays it."""
    result, report = tiny_bench[0], tiny_bench[1]
    rows = {r["method"]: r for r in result["learned"] if r["method"] in STATISTICS_ROWS}
    assert set(rows) == set(STATISTICS_ROWS)
    validation = {t["name"]: t["sizes"]["validation"] for t in result["tasks"]}
    assert rows["regmean"]["data_seen"]["labels"] is False and rows["fisher"]["data_seen"]["labels"] is True
    trials = rows["regmean"]["trials"]  # α chosen on validation like the data-free rows' parameters
    assert len(trials) == 4 and rows["regmean"]["spec"]["params"] == max(
        trials, key=lambda t: t["validation_normalized"])["params"]
    assert rows["regmean_plusplus"]["trials"] == []
    fisher = rows["fisher"]  # each estimator at each floor scored on validation, the best one the row's
    trials = fisher["trials"]
    assert [(t["fisher_labels"], t["params"]["floor"]) for t in trials] == [
        (labels, floor) for labels in ("given", "weighted-sum") for floor in (1e-6, 1e-7, 1e-8)]
    best = max(trials, key=lambda t: t["validation_normalized"])
    assert (fisher["learning"]["fisher_labels"], fisher["spec"]["params"]) == (best["fisher_labels"], best["params"])
    assert f"statistics-{best['fisher_labels']}-" in fisher["spec"]["models"][0]["statistics"]
    assert set(fisher["data_seen"]["fisher_norms"]) == {"given", "weighted-sum"}
    merged = {}
    for name, row in rows.items():
        assert row["data_seen"]["examples"] == validation and 0.0 <= row["average"]["accuracy"] <= 1.0
        assert row["spec"]["method"] == STATISTICS_ROWS[name].method and row["seconds"]["statistics"] > 0
        merged[name] = load_file(api.merge(row["spec"], tmp_path / name).out / "model.safetensors")
    deep = next(n for n in merged["regmean"] if "layer.5." in n and n.endswith("dense.weight"))
    assert not torch.equal(merged["regmean"][deep], merged["regmean_plusplus"][deep])  # Grams through the merge
    assert "regmean_plusplus (learned)" in (report / "results.md").read_text()


def test_search_rows_score_their_budget_on_validation_and_merge_the_best_point(tiny_bench):
    result, report = tiny_bench[0], tiny_bench[1]
    rows = {r["method"]: r for r in result["learned"] if r["method"] in SEARCH_ROWS}
    assert set(rows) == set(SEARCH_ROWS)
    for name, row in rows.items():
        trials = row["trials"]
        assert len(trials) == SEARCH_ROWS[name].budget and row["data_seen"]["labels"] is True
        best = max(trials, key=lambda t: t["validation_normalized"])
        weights = [m["weight"] for m in row["spec"]["models"]]
        assert row["spec"]["method"] == "task_arithmetic"
        assert weights == [best["params"][f"weight:{i}"] for i in range(len(weights))]
        assert all(0.0 <= w <= 1.0 for w in weights) and 0.0 <= row["average"]["accuracy"] <= 1.0
    assert len({str(t["params"]) for t in rows["search_cma"]["trials"]}) > 1  # CMA-ES moved
    assert "search_cma (learned)" in (report / "results.md").read_text()


@pytest.mark.parametrize("name", ["adamerging_layer", "adamerging_layer_ties"])
def test_the_written_merge_is_the_learned_view_and_its_spec_replays_bit_for_bit(tiny_zoo, tmp_path, name):
    result = learn_on_zoo(tiny_zoo, learned_method(name, steps=3, lr=0.05))
    spec, _ = write_learned(tiny_zoo, learned_method(name), result, tmp_path / "learned")
    assert spec["method"] == ("ties" if name.endswith("ties") else "task_arithmetic")
    written = load_file(tmp_path / "learned" / "model.safetensors")
    with torch.no_grad():
        for name, value in result.view.merged_parameters().items():
            torch.testing.assert_close(written[name], value, rtol=0, atol=1e-6)
    saved = yaml.safe_load((tmp_path / "learned" / "taskfuse_spec.yaml").read_text())
    pick = lambda overrides: [(o["tensors"], o["weights"]) for o in overrides]  # noqa: E731
    assert pick(saved["overrides"]) == pick(spec["overrides"]) and len(spec["overrides"]) == len(result.view.names)
    api.merge(tmp_path / "learned" / "taskfuse_spec.yaml", tmp_path / "replayed")
    replayed = load_file(tmp_path / "replayed" / "model.safetensors")
    assert all(torch.equal(replayed[n], written[n]) for n in written)


def test_self_positioning_writes_its_view_and_replays_bit_for_bit(tiny_zoo, tmp_path):
    method = learned_method("self_positioning", steps=3)
    result = learn_on_zoo(tiny_zoo, method)
    assert float(result.view.scale) != 1.0  # λ learned
    spec, _ = write_learned(tiny_zoo, method, result, tmp_path / "learned")
    assert spec["method"] == "self_positioning"
    written = load_file(tmp_path / "learned" / "model.safetensors")
    with torch.no_grad():
        for name, value in result.view.merged_parameters().items():
            torch.testing.assert_close(written[name], value, rtol=0, atol=1e-6)
    api.merge(tmp_path / "learned" / "taskfuse_spec.yaml", tmp_path / "replayed")
    replayed = load_file(tmp_path / "replayed" / "model.safetensors")
    assert all(torch.equal(replayed[n], written[n]) for n in written)


def test_task_wise_coefficients_become_model_weights_and_partitions_are_refused(tiny_zoo):
    result = learn_on_zoo(tiny_zoo, learned_method("adamerging_task", steps=2, lr=0.05))
    models = [str(e.model_dir) for e in tiny_zoo.experts.values()]
    spec = learned_spec(result.view, str(tiny_zoo.base_dir), models)
    assert [m["weight"] for m in spec["models"]] == result.view.coefficients.detach().double().tolist()
    assert "overrides" not in spec
    atlas_k = LearnedMethod("atlas_k", Parameterization("partition", 2), Recipe(steps=1), 0.0, labelled=False)
    partitioned = learn_on_zoo(tiny_zoo, atlas_k)
    with pytest.raises(UsageError, match="vary inside a tensor"):
        learned_spec(partitioned.view, str(tiny_zoo.base_dir), models)


def test_learn_command_writes_merge_record_and_map_and_refuses_bad_input(tiny_bench, tmp_path):
    env = {"TASKFUSE_CACHE": str(tiny_bench[3])}
    run = lambda *args: subprocess.run([SCRIPT, "learn", *args], capture_output=True, text=True,  # noqa: E731
                                       env={**os.environ, **env})
    done = run("atlas_fewshot", "--variant", "tiny", "--steps", "2", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    learned = json.loads((tmp_path / "out" / "taskfuse_learned.json").read_text())
    assert learned["data_seen"]["labels"] is True and learned["data_seen"]["per_class"] == 16
    assert len(learned["losses"]) == 2 and learned["gradient_step"] == "recomputed"  # the memory-lean step
    assert (tmp_path / "out" / "coefficients.png").read_bytes()[:4] == b"\x89PNG"
    assert "taskfuse merge" in done.stderr and "taskfuse eval" in done.stderr
    bad = run("adamerge", "--variant", "tiny", "-o", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown learned method 'adamerge'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x").exists()
    bad = run("atlas", "--variant", "tiny", "--step", "fast", "-o", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--step fast: use one of recomputed, merged-once" in bad.stderr
    assert not (tmp_path / "x").exists()
    folder = foreign_folder(tmp_path)
    refused = run("atlas", "--variant", "tiny", "--steps", "1", "-o", str(folder))
    assert refused.returncode == 2 and "OutputExistsError" in refused.stderr
    assert_untouched(folder)


def test_bench_refuses_an_unknown_learned_row_before_building_anything(tmp_path):
    done = subprocess.run([SCRIPT, "bench", "--variant", "tiny", "--learned", "adamerging_layer,nope", "--out",
                           str(tmp_path / "report")], capture_output=True, text=True,
                          env={**os.environ, "TASKFUSE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2 and "unknown learned row(s) 'nope'" in done.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "report").exists()


def test_the_llm_routing_study_refuses_rows_it_does_not_run_before_building_anything(tmp_path):
    done = subprocess.run([SCRIPT, "bench", "--llm", "--routing", "--fusion", "--out", str(tmp_path / "report")],
                          capture_output=True, text=True, env={**os.environ, "TASKFUSE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2 and "--fusion and --learned do not apply" in done.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "report").exists()
