"""New tasks from a causal-LM LoRA library (issue 13's leave-one-out, on the LLM benchmark): for each of its tasks,
the other tasks' SmolLM2 experts are the library and k examples per answer of the held-out task are all the data.

Rows, judged as the LLM benchmark judges (exact match of the greedy reply, likelihood accuracy over the answers) on
the held-out task's test questions and normalised by that task's own expert:
- the base zero-shot;
- LoraHub: one weight per adapter searched on the k-shot examples, one merged adapter (programs/lorahub_adapter.py,
  what `taskfuse route lorahub` runs);
- LoraHub, then fine-tuned: that adapter's factors trained on the same examples with the k-shot LoRA's recipe and
  steps (programs/adapter_finetune.py, what `taskfuse route lorahub --finetune-steps` runs): the composition as the
  start of the k-shot training, so that a task whose answers no adapter knows is still in reach;
- MHR, the routing per head block adapted to the examples, and MHR with the adapters' factors learning too
  (programs/mhr_new_task.py, what `taskfuse route mhr [--skills]` runs);
- a LoRA trained from scratch on the same examples, with the experts' recipe, for as many steps as the MHR rows;
- the task's own expert (the normaliser).

The examples reach the programs as the commands' users give them: a JSONL file of {"prompt", "completion"}, the
prompt in the chat template and the completion the answer and the end-of-turn token, as the experts learnt them.
Decided here: k = 5 per answer, capped at 40 examples (a task with many answers would otherwise see most of its
train split).

The three rows that learn weights from the examples by gradient, LoraHub then fine-tuned, MHR with skills and the
k-shot LoRA (the comparison issue 13's target is about), run once per seed of `seeds` (default 3): the seed orders
the batches, and draws the LoRA's initial factors and MHR's relaxed routing samples; the examples stay the same. Their row is the mean over seeds,
and the summary keeps each seed's average too, so that a gap between them can be read against the seed-to-seed
spread (a single run at this budget moved a task by 10-20 points, docs/llm.md). The other rows learn no weights
by gradient (LoraHub searches 5 weights) or are the routing only, and run once.

A user's task (`task_files`: prompt/answer pairs, as `taskfuse bench --llm --task-file` reads them) is a new task
only, as in the encoder routing study: its library is every built-in task's expert, its own expert is trained as the
normaliser alone, it is in no built-in task's library, and it stays out of the average and the win count."""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import UsageError
from ..io.output import staged_output
from ..llm.base import base_model_dir
from ..llm.bench import LIMITS, Judge
from ..llm.evaluate import evaluate
from ..llm.routed import ROUTED_STEPS
from ..llm.tasks import DEFAULT_TASKS, LLMTask, load_llm_task
from ..llm.zoo import Recipe, build_llm_zoo
from .provenance import code_commit, command_line, machine
from .report import commit_text

SHOTS, MAX_EXAMPLES = 5, 40
# MHR's adaptation and the k-shot LoRA's training: as many steps of 8 as the experts trained and the LLM benchmark's
# routers learn (a step runs forward and backward through the whole model: the encoder study's 40 would add a third)
ADAPT_STEPS = ROUTED_STEPS
ROWS = {"zero_shot": "base (zero-shot)", "lorahub": "LoraHub (k-shot)",
        "lorahub_tuned": "LoraHub, then fine-tuned (k-shot)", "mhr": "MHR, routing learnt (k-shot)",
        "mhr_skills": "MHR, routing and skills learnt (k-shot)", "kshot_lora": "LoRA from scratch (k-shot)",
        "expert": "the task's own expert"}
METRICS = ("exact_match", "likelihood_accuracy")
SEEDS = (0, 1, 2)
SEEDED = ("lorahub_tuned", "mhr_skills", "kshot_lora")
Log = Callable[[str], None]


def few_shot(task: LLMTask, shots: int = SHOTS, cap: int = MAX_EXAMPLES) -> tuple:
    """The first `shots` train questions of each answer, in train order, at most `cap` of them."""
    taken, chosen = {}, []
    for example in task.splits["train"]:
        if taken.get(example.answer, 0) < shots and len(chosen) < cap:
            taken[example.answer] = taken.get(example.answer, 0) + 1
            chosen.append(example)
    return tuple(chosen)


def write_examples(judge: Judge, task: LLMTask, examples: tuple, path: Path) -> Path:
    """The examples as a user of `taskfuse route` writes them: chat-formatted prompt, answer and end of turn."""
    path.write_text("".join(json.dumps({"prompt": judge.chat(e.prompt),
                                        "completion": task.answers[e.answer] + judge.tok.eos_token}) + "\n"
                            for e in examples))
    return path


def held_out_rows(judge: Judge, task: LLMTask, library_experts: dict, own_expert: Path, examples_file: Path,
                  kshot_adapters: dict[int, Path], work: Path, log: Log) -> tuple[dict, dict]:
    """Every row's test score on `task` with `library_experts` (name → adapter folder, never the task's own) as
    the library, the seeded rows' the mean over `kshot_adapters`' seeds; each seed's scores, and what LoraHub
    found."""
    from ..programs.adapter_finetune import finetuned_adapter
    from ..programs.library_text import causal_lm_loader
    from ..programs.lorahub_adapter import lorahub_adapter
    from ..programs.mhr_new_task import adapted_mhr
    from ..routing.library import LoraLibrary

    others = {name: str(adapter) for name, adapter in library_experts.items()}
    score = lambda model: asdict(evaluate(model, judge.tok, task, "test"))  # noqa: E731
    rows, seconds, per_seed = {}, {}, {}

    def timed(key: str, make: Callable, seeds: tuple[int, ...] = (0,)) -> None:
        begun = time.perf_counter()
        scores = [score(make(seed)) for seed in seeds]
        rows[key] = {**scores[0], **{m: sum(s[m] for s in scores) / len(scores) for m in METRICS}}  # n: the same
        if key in SEEDED:
            per_seed[key] = scores
        seconds[key] = round(time.perf_counter() - begun, 1)
        each = " / ".join(f"{100 * s['exact_match']:.0f}" for s in scores)
        spread = f", seeds {each}" if len(seeds) > 1 else ""
        log(f"{task.name} held out, {ROWS[key]}: exact match {100 * rows[key]['exact_match']:.0f} %{spread} "
            f"({seconds[key]} s)")

    timed("zero_shot", lambda _: judge.load(judge.base))
    hub = {}

    def lorahub(_):
        report = lorahub_adapter(str(judge.base), others, examples_file, work / "lorahub")
        hub.update(report["lorahub"], written=report["written"])
        # no weighting beat the base on the examples: LoraHub's answer is the base itself
        return judge.load_adapter(work / "lorahub") if report["written"] else judge.load(judge.base)
    timed("lorahub", lorahub)

    def lorahub_tuned(seed):
        if not hub["written"]:  # no weighted adapter to start from: from the base, it is the LoRA from scratch
            return judge.load_adapter(kshot_adapters[seed])
        finetuned_adapter(str(judge.base), work / "lorahub", examples_file, work / f"lorahub_tuned_{seed}",
                          ADAPT_STEPS, seed)
        return judge.load_adapter(work / f"lorahub_tuned_{seed}")
    timed("lorahub_tuned", lorahub_tuned, tuple(kshot_adapters))
    load_base, library = causal_lm_loader(str(judge.base)), LoraLibrary.from_adapters(judge.base, others)
    mhr = lambda skills: lambda seed: adapted_mhr(load_base, library, judge.tok, examples_file,  # noqa: E731
                                                  ADAPT_STEPS, skills=skills, seed=seed)[0]
    timed("mhr", mhr(False))
    timed("mhr_skills", mhr(True), tuple(kshot_adapters))
    timed("kshot_lora", lambda seed: judge.load_adapter(kshot_adapters[seed]), tuple(kshot_adapters))
    timed("expert", lambda _: judge.load_adapter(own_expert))
    return rows, {"seconds": seconds, "per_seed": per_seed,
                  "lorahub": {k: hub[k] for k in ("weights", "objective", "objective_at_start", "evaluations", "written")}}


def run_llm_new_task(out: Path, tasks: tuple[str, ...] = DEFAULT_TASKS, limits: dict | None = None,
                     recipe: Recipe = Recipe(), log: Log = print, base: Path | None = None,
                     held_out: tuple[str, ...] | None = None, task_files: tuple[str, ...] = (),
                     seeds: tuple[int, ...] = SEEDS) -> dict:
    """Each of `held_out` (default: every task)'s rows, the library every other task of `tasks` (every one of them
    for a task of `task_files`), the rows of SEEDED once per seed of `seeds`; report in `out`."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds {list(seeds)}: give one or more different seeds.")
    started = time.perf_counter()
    base = base or base_model_dir()
    llm_tasks = [load_llm_task(name, limits=limits or LIMITS) for name in tasks]
    user_tasks = [load_llm_task(path, limits=limits or LIMITS) for path in task_files]
    every = llm_tasks + user_tasks
    names = [t.name for t in every]
    if len(set(names)) != len(names):
        raise UsageError(f"two tasks are named alike ({', '.join(names)}): a task file's name is its file name. "
                         "Fix: rename the file.")
    judge = Judge(base, every)
    experts = build_llm_zoo(base, every, recipe,
                            progress=lambda d, t, n: log(f"expert {d}/{t} trained: {n}"))
    per_task, details, shots = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in [t for t in every if held_out is None or t.name in held_out]:
            examples = few_shot(task)
            shots[task.name] = len(examples)
            kshot_task = replace(task, splits={**task.splits, "train": examples})
            begun = time.perf_counter()
            kshot = {seed: build_llm_zoo(base, [kshot_task], replace(recipe, steps=ADAPT_STEPS, seed=seed),
                                         workers=1)[task.name].adapter for seed in seeds}
            log(f"{task.name} held out: {len(examples)} examples, k-shot LoRAs (seeds {list(seeds)}) ready in "
                f"{time.perf_counter() - begun:.0f} s")
            work = Path(tmp) / task.name
            work.mkdir()
            library = {t.name: experts[t.name].adapter for t in llm_tasks if t.name != task.name}
            per_task[task.name], details[task.name] = held_out_rows(
                judge, task, library, experts[task.name].adapter,
                write_examples(judge, task, examples, work / "examples.jsonl"), kshot, work, log)
    # the built-in tasks' average; a run that holds out only task files averages those
    averaged = [t.name for t in llm_tasks if t.name in per_task] or list(per_task)
    summary = {}
    experts_scores = {t: per_task[t]["expert"] for t in averaged}
    for key in ROWS:
        summary[key] = _normalised_average({t: per_task[t][key] for t in averaged}, experts_scores)
        # on exact match, or on likelihood accuracy where exact match ties (SmolLM2 zero-shot answers almost
        # nothing exactly: bench-llm's base row is 0 % on every task)
        summary[key]["beats_zero_shot"] = sum(_both(per_task[t][key]) > _both(per_task[t]["zero_shot"])
                                              for t in averaged)
        if key in SEEDED:  # each seed's own average: the spread the mean hides
            summary[key]["per_seed"] = [
                _normalised_average({t: details[t]["per_seed"][key][i] for t in averaged}, experts_scores)
                for i in range(len(seeds))]
    result = {"command": command_line(), "code": code_commit(), "machine": machine(),
              "seconds": round(time.perf_counter() - started), "base": str(base), "limits": limits or LIMITS,
              "recipe": asdict(recipe), "shots_per_answer": SHOTS, "max_examples": MAX_EXAMPLES,
              "examples_seen": shots, "adapt_steps": ADAPT_STEPS, "seeds": list(seeds), "seeded_rows": list(SEEDED),
              "tasks": {t.name: {"answers": t.answers, "fingerprint": t.fingerprint()[:16]} for t in llm_tasks},
              "task_files": {t.name: {"path": str(path), "answers": t.answers, "fingerprint": t.fingerprint()[:16]}
                             for t, path in zip(user_tasks, task_files)},
              "averaged_over": averaged, "rows": per_task, "details": details, "summary": summary}
    with staged_output(Path(out), "report") as stage:
        (stage / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (stage / "results.md").write_text("# New tasks from the LLM benchmark's LoRA library\n\n" + table(result))
    return result


def _normalised_average(scores: dict[str, dict], experts: dict[str, dict]) -> dict:
    """Each metric of `scores` (task → score) as a fraction of the task's expert's, averaged over the tasks."""
    return {m: sum(_ratio(scores[t][m], experts[t][m]) for t in scores) / len(scores) for m in METRICS}


def _both(score: dict) -> tuple[float, float]:
    return score["exact_match"], score["likelihood_accuracy"]


def _ratio(score: float, own: float) -> float:
    return score / own if own else 0.0


def table(result: dict) -> str:
    """Each row's mean normalised scores (with each seed's where it ran per seed), its wins over zero-shot, and exact
    match per held-out task."""
    tasks, files, seeds = list(result["rows"]), result.get("task_files", {}), result.get("seeds", [0])
    heads = [f"{t} (task file)" if t in files else t for t in tasks]
    per_seed = len(seeds) > 1  # a column of each seed's average
    lines = ["| row | normalised EM | " + ("each seed's | " if per_seed else "") + "normalised LL | beats zero-shot | "
             + " | ".join(heads) + " |", "|---|---|---|---|" + "---|" * (len(tasks) + per_seed)]
    for key, name in ROWS.items():
        s = result["summary"][key]
        wins = "" if key == "zero_shot" else f"{s['beats_zero_shot']}/{len(result['averaged_over'])}"
        each = " / ".join(f"{100 * p['exact_match']:.1f}" for p in s.get("per_seed", []))
        cells = [f"{100 * result['rows'][t][key]['exact_match']:.0f}" for t in tasks]
        lines.append(f"| {name} | {100 * s['exact_match']:.1f} % | " + (f"{each} | " if per_seed else "")
                     + f"{100 * s['likelihood_accuracy']:.1f} % | {wins} | " + " | ".join(cells) + " |")
    user = (f" A task file's task ({', '.join(files)}) has all {len(result['tasks'])} built-in experts as its "
            "library and is left out of the average and the win count." if files else "")
    named = [ROWS[k] for k in result["seeded_rows"]]
    seeded = (f" {', '.join(named[:-1])} and {named[-1]}: the mean over seeds {seeds} (batch order, "
              "initial factors, routing samples; the same examples), each seed's average beside it."
              if len(seeds) > 1 else "")
    return "\n".join(lines) + (
        f"\n\nEach task held out in turn, the other {len(result['tasks']) - 1} tasks' experts the library, "
        f"{result['shots_per_answer']} examples per answer (at most {result['max_examples']}) its only data; "
        f"normalised by the held-out task's own expert and averaged; per task: exact match in % of "
        f"{result['limits']['test']} test questions.{seeded} `{result['command']}` at "
        f"{commit_text(result['code'])[:10]}, {result['seconds'] / 60:.1f} min.{user}\n")
