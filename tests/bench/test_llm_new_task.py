"""The LLM new-task study on a tiny real Llama and two real tasks: each task held out in turn with the other's
experts as the library, every row judged, LoraHub weighing only the library, the k-shot data what the rows saw."""
import json

from taskfuse.bench.llm_new_task import MAX_EXAMPLES, ROWS, few_shot, run_llm_new_task, table
from taskfuse.llm.tasks import load_llm_task
from taskfuse.llm.zoo import Recipe
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

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
                              Recipe(rank=2, steps=3, batch=2, lr=1e-2), log=lambda line: None, base=tiny)
    assert set(result["rows"]) == set(TASKS)
    for task, rows in result["rows"].items():
        assert set(rows) == set(ROWS) and all(r["n"] == 4 for r in rows.values())
        others = set(TASKS) - {task}
        assert set(result["details"][task]["lorahub"]["weights"]) == others  # the held-out expert is not offered
        assert result["examples_seen"][task] == len(few_shot(load_llm_task(task)))
    saved = json.loads((tmp_path / "report" / "result.json").read_text())
    assert saved["summary"] == result["summary"]
    assert "LoraHub (k-shot)" in table(result) and "the other 2 tasks' experts" in table(result) and (tmp_path / "report" / "results.md").exists()
