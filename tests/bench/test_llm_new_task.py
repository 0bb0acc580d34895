"""The LLM new-task study on a tiny real Llama and two real tasks: each task held out in turn with the other's
experts as the library, every row judged, LoraHub weighing only the library, the k-shot data what the rows saw."""
import json
from pathlib import Path

import pytest

from taskfuse.bench.llm_new_task import MAX_EXAMPLES, METRICS, ROWS, SEEDED, few_shot, run_llm_new_task, table
from taskfuse.llm.tasks import load_llm_task
from taskfuse.llm.zoo import Recipe
from taskfuse.errors import UsageError
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("wordnet_pos", "fortune_language", "manpage_section")


def test_few_shot_takes_the_first_examples_of_each_answer_up_to_the_cap():
    task = load_llm_task("wordnet_pos")
    chosen = few_shot(task, shots=2)
    answers = [e.answer for e in chosen]
    assert all(answers.count(a) == 2 for a in set(answers)) and set(answers) == {e.answer for e in task.splits["train"]}
    assert list(chosen) == [e for e in task.splits["train"] if e in chosen]  # train order kept
    assert len(few_shot(task, shots=1000)) == MAX_EXAMPLES


def test_each_task_is_held_out_with_the_others_as_its_library(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    tiny = save_tiny_causal_lm(tmp_path / "tiny", "llama", seed=3)
    result = run_llm_new_task(tmp_path / "report", TASKS, {"validation": 2, "test": 4},
                              Recipe(rank=2, steps=3, batch=2, lr=1e-2), log=lambda line: None, base=tiny,
                              seeds=(0, 1))
    assert set(result["rows"]) == set(TASKS)
    for task, rows in result["rows"].items():
        assert set(rows) == set(ROWS) and all(r["n"] == 4 for r in rows.values())
        others = set(TASKS) - {task}
        assert set(result["details"][task]["lorahub"]["weights"]) == others  # the held-out expert is not offered
        assert result["examples_seen"][task] == len(few_shot(load_llm_task(task)))
        for key in SEEDED:  # the seeded rows are their seeds' mean; no other row ran per seed
            each = result["details"][task]["per_seed"][key]
            assert len(each) == 2 and all(rows[key][m] == pytest.approx((each[0][m] + each[1][m]) / 2) for m in METRICS)
        assert set(result["details"][task]["per_seed"]) == set(SEEDED)
    # each seed's average, whose mean is the row's
    for key in SEEDED:
        each = result["summary"][key]["per_seed"]
        assert len(each) == 2 and result["summary"][key]["exact_match"] == pytest.approx(
            sum(e["exact_match"] for e in each) / 2)
    assert result["seeds"] == [0, 1] and "each seed's" in table(result)
    # the two seeds' k-shot LoRAs are different adapters (the seed reached the recipe), both kept in the cache
    kshot = sorted((tmp_path / "cache" / "llm-experts").glob("wordnet_pos-*"))
    assert len(kshot) == 3  # the expert and two k-shot LoRAs
    saved = json.loads((tmp_path / "report" / "result.json").read_text())
    assert saved["summary"] == result["summary"]
    assert "LoraHub (k-shot)" in table(result) and "the other 2 tasks' experts" in table(result) and (tmp_path / "report" / "results.md").exists()


def _verb_task_file(path, per_label=40, labels=("motion", "emotion", "perception")):
    """Real WordNet verb questions (the committed task file), a few labels: a user's task of prompt/answer pairs."""
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "tasks" / "wordnet_verb_topic_llm.jsonl").open()]
    kept = [r for label in labels for r in [r for r in rows if r["answer"] == label][:per_label]]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return path


def test_a_task_file_is_held_out_with_every_built_in_expert_and_kept_out_of_their_average(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    tiny = save_tiny_causal_lm(tmp_path / "tiny", "llama", seed=3)
    mine = _verb_task_file(tmp_path / "verbs.jsonl")
    result = run_llm_new_task(tmp_path / "report", TASKS, {"validation": 2, "test": 4},
                              Recipe(rank=2, steps=3, batch=2, lr=1e-2), log=lambda line: None, base=tiny,
                              held_out=("verbs", "wordnet_pos"), task_files=(str(mine),))
    assert set(result["rows"]) == {"verbs", "wordnet_pos"}
    assert set(result["details"]["verbs"]["lorahub"]["weights"]) == set(TASKS)  # every built-in expert
    assert set(result["details"]["wordnet_pos"]["lorahub"]["weights"]) == set(TASKS[1:])  # never the file's
    assert result["averaged_over"] == ["wordnet_pos"] and result["summary"]["lorahub"]["beats_zero_shot"] <= 1
    own = result["rows"]["wordnet_pos"]
    assert result["summary"]["expert"]["exact_match"] == (1.0 if own["expert"]["exact_match"] else 0.0)
    assert "verbs (task file)" in table(result) and "left out of the average" in table(result)


def test_a_task_file_named_like_a_built_in_task_is_refused_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    clash = _verb_task_file(tmp_path / "wordnet_pos.jsonl")
    with pytest.raises(UsageError, match="rename the file"):
        run_llm_new_task(tmp_path / "report", TASKS[:2], {"validation": 2, "test": 4}, log=lambda line: None,
                         base=tmp_path / "no-base-needed", task_files=(str(clash),))
    # the tasks are read (and their data cached), no expert is trained and no report written
    assert not (tmp_path / "cache" / "llm-experts").exists() and not (tmp_path / "report").exists()


def test_no_seeds_or_a_repeated_seed_is_refused(tmp_path):
    for seeds in ((), (1, 1)):
        with pytest.raises(UsageError, match="different seeds"):
            run_llm_new_task(tmp_path / "report", TASKS[:2], {"validation": 2, "test": 4}, log=lambda line: None,
                             base=tmp_path / "no-base-needed", seeds=seeds)
    assert not (tmp_path / "report").exists()


def test_the_figure_draws_each_tasks_rows_with_the_seeds_range_from_the_committed_result(tmp_path):
    from taskfuse.bench.llm_new_task_figure import figure_bars, new_task_figure
    result = json.loads((ROOT / "benchmarks" / "results" / "llm-new-task" / "result.json").read_text())
    tasks, bars = figure_bars(result)
    assert len(tasks) == len(result["rows"]) and set(bars) == set(ROWS.values())
    for t, name in enumerate(result["rows"]):
        for key, label in ROWS.items():
            mean, low, high = (column[t] for column in bars[label])
            assert mean == pytest.approx(100 * result["rows"][name][key]["exact_match"])
            seeds = [100 * s["exact_match"] for s in result["details"][name]["per_seed"].get(key, [])]
            assert (low, high) == ((min(seeds), max(seeds)) if key in SEEDED else (mean, mean))
            assert low <= mean <= high
    new_task_figure(result, tmp_path / "a.png")
    new_task_figure(result, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # no date or version stamped in
