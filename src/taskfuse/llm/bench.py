"""`taskfuse bench --llm`: the LLM benchmark. SmolLM2-135M-Instruct, one LoRA expert per generative task, every
data-free merge of the experts' full-weight versions with its parameters chosen on validation, Arrow routing over
the LoRA experts, EMR-Merging and Twin-Merging serving each task with a model of its own (llm/task_models.py),
aTLAS's per-tensor coefficients learned from the Iso-C merge on the tasks' train answers (llm/learned.py), and the
MoE upcycled from the experts, all judged on test by exact match of the greedy answer and
by likelihood accuracy over the task's answers, each normalised by the task's own expert, beside the base model
zero-shot."""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..bench.provenance import code_commit, command_line, machine
from ..bench.llm_report import EXPERTS_ROW, write_llm_report
from .base import base_model_dir
from .evaluate import evaluate
from .learned import ATLAS, LEARNED_ROW, atlas_row
from .task_models import EMR_ROW, TWIN_GIVEN_ROW, TWIN_ROW, emr_row, full_states, twin_rows
from .tasks import DEFAULT_TASKS, load_llm_task
from .zoo import Recipe, build_llm_zoo

# Two points around each paper's default where a merge is cheap; one (the paper's) where its SVDs take minutes
# (TSV, Iso-CTS: about 4 min each on SmolLM2's 210 matrices here). A single point needs no validation pass.
GRIDS: dict[str, list[dict]] = {
    "linear": [{}],
    "task_arithmetic": [{"scale": s} for s in (0.1, 0.2)],  # the first run chose the lower end of every grid
    "ties": [{"density": 0.2, "scale": s} for s in (0.5, 1.0)],
    "dare_ties": [{"density": 0.3, "scale": s} for s in (0.5, 1.0)],
    "breadcrumbs": [{"scale": s} for s in (0.15, 0.3)],
    "tsv": [{"scale": 1.0}],
    "iso_c": [{"scale": s} for s in (1.0, 1.5)],  # at round-off rank: 1.0 kept 59 % in a one-off check
    "iso_cts": [{"scale": 1.0}],
}
LIMITS = {"validation": 20, "test": 40}  # per task: a pass over 6 × 40 prompts costs about 90 s here (compute-bound)
QUICK_LIMITS = {"validation": 5, "test": 10}
METRICS = ("exact_match", "likelihood_accuracy")
MOE_ROW = "moe (router tuned through the MoE, top-2)"
ARROW_ROW = "arrow (per-token routing over the LoRA experts)"
ARROW_TOP_K = [3, 2, 1]  # chosen on validation; the first (PEFT's default) alone in a quick run
# the routers start from the per-layer fit to 32 prompts per expert, then all layers learn together through the MoE
# on next-token loss (programs/moe_tuning.py) from 64 training questions per expert; batches of 4, not 8: 100 steps
# of 8 kept 99.0 % of the experts' exact match in 10.6 min, of 4 98.3 % in 6.3 (40 and 60 steps of 8: 95.5, 93.9 %)
MOE_PROMPTS, MOE_EXAMPLES = 32, 64
MOE_TUNING = {"steps": 100, "lr": 1e-3, "batch_size": 4, "routing_loss": 1.0}
Log = Callable[[str], None]


def run_llm_bench(out: Path, quick: bool = False, task_files: tuple[str, ...] = (), log: Log = print,
                  fusion: bool = False, learned: bool = True, routing: bool = False) -> dict:
    """The benchmark's rows (with `routing`, instead: the routed rows of llm/routed.py), judged and reported."""
    started = time.perf_counter()
    say = lambda line: log(f"[{_clock(started)}] {line}")  # noqa: E731
    limits = QUICK_LIMITS if quick else LIMITS
    base = base_model_dir()
    tasks = [load_llm_task(name, limits=limits) for name in (*DEFAULT_TASKS, *task_files)]
    say(f"{len(tasks)} tasks; training or loading their LoRA experts")
    experts = build_llm_zoo(base, tasks, Recipe(), progress=lambda d, t, n: say(f"expert {d}/{t} trained: {n}"))
    zoo_seconds = round(time.perf_counter() - started)
    judge = Judge(base, tasks)
    rows = {"base (zero-shot)": judge.model_scores(judge.load(base), "test")}
    own = {t.name: asdict(evaluate(judge.load_adapter(experts[t.name].adapter), judge.tok, t, "test")) for t in tasks}
    rows[EXPERTS_ROW] = own
    say("base and experts judged")
    parts = Parts(rows, own, quick, say)
    if routing:
        routed_rows(judge, tasks, experts, parts)
    else:
        merged_rows(judge, tasks, experts, parts, fusion, learned)
    result = {"command": command_line(), "code": code_commit(), "machine": machine(),
              "seconds": round(time.perf_counter() - started), "zoo_seconds": zoo_seconds,
              "row_seconds": parts.row_seconds, "quick": quick, "routing": routing, "moe_tuning": parts.moe_tuning,
              "learned": parts.summaries, "task_models": parts.task_models,
              "limits": limits, "base": str(base), "recipe": asdict(Recipe()),
              "tasks": {t.name: {"answers": t.answers, "fingerprint": t.fingerprint()[:16]} for t in tasks},
              "experts": {n: e.record for n, e in experts.items()}, "rows": rows, "chosen": parts.chosen,
              "summary": {name: {m: _normalised_mean(scores, own, m) for m in METRICS} for name, scores in rows.items()}}
    write_llm_report(result, out)
    return result


@dataclass
class Parts:
    """What the rows add to the result as they run: scores, choices, seconds and how each row learnt."""
    rows: dict
    own: dict
    quick: bool
    say: Log
    chosen: dict = field(default_factory=dict)
    row_seconds: dict = field(default_factory=dict)
    summaries: dict = field(default_factory=dict)
    task_models: dict = field(default_factory=dict)
    moe_tuning: dict | None = None

    def timed(self, name: str, begun: float, detail: str = "") -> None:
        """Record `name`'s seconds since `begun` and say its normalised exact match."""
        self.row_seconds[name] = round(time.perf_counter() - begun)
        self.say(f"{name.split(' (')[0]}{' ' + detail if detail else ''}: normalised exact match "
                 f"{100 * _normalised_mean(self.rows[name], self.own, 'exact_match'):.1f} % "
                 f"({self.row_seconds[name]} s)")


def arrow_row(judge, library, parts: Parts) -> None:
    """Arrow over `library` (read once: prototypes are an SVD per module and adapter), top-k chosen on
    validation."""
    begun = time.perf_counter()
    parts.rows[ARROW_ROW], parts.chosen[ARROW_ROW] = best_on_validation(
        judge, ARROW_TOP_K[:1] if parts.quick else ARROW_TOP_K, lambda k: judge.arrow(library, k), parts.own)
    parts.timed(ARROW_ROW, begun, f"top-{parts.chosen[ARROW_ROW]['params']}")


def routed_rows(judge, tasks, experts, parts: Parts) -> None:
    """Arrow, PHATGOOSE and MHR over the LoRA experts (llm/routed.py)."""
    from .routed import MHR_ROW, PHATGOOSE_ROW, ROUTED_STEPS, mhr_row, phatgoose_row
    library = judge.library(experts)
    arrow_row(judge, library, parts)
    steps = 4 if parts.quick else ROUTED_STEPS
    for name, row in ((PHATGOOSE_ROW, phatgoose_row), (MHR_ROW, mhr_row)):
        begun = time.perf_counter()
        parts.rows[name], parts.summaries[name] = row(judge, tasks, library, steps, parts.say)
        parts.timed(name, begun)


def merged_rows(judge, tasks, experts, parts: Parts, fusion: bool, learned: bool) -> None:
    """Every data-free merge, Arrow, EMR-Merging, Twin-Merging, aTLAS and the MoE (and with `fusion` the decode-time
    rows)."""
    rows, own, quick, chosen = parts.rows, parts.own, parts.quick, parts.chosen

    def learning_log(step: int, steps: int, loss: float) -> None:
        if step % 5 == 0 or step == steps:
            parts.say(f"atlas learning {step}/{steps}: loss {loss:.3f}")
    with tempfile.TemporaryDirectory(prefix="taskfuse-llm-bench-") as tmp:
        for method, grid in GRIDS.items():
            begun = time.perf_counter()
            rows[method], chosen[method] = best_on_validation(
                judge, grid[:1] if quick else grid,
                lambda params: judge.merge(method, params, experts, merge_folder(tmp, method, params)), own)
            parts.timed(method, begun, f"{chosen[method]['params']}")
        arrow_row(judge, judge.library(experts), parts)
        begun = time.perf_counter()
        states = full_states(judge, tasks, experts)  # each expert's full weights, read once for EMR and Twin
        rows[EMR_ROW], parts.task_models[EMR_ROW] = emr_row(judge, tasks, states)
        parts.timed(EMR_ROW, begun)
        begun = time.perf_counter()
        twin, twin_summaries = twin_rows(judge, tasks, states,
                                         merge_folder(tmp, "task_arithmetic", chosen["task_arithmetic"]["params"]),
                                         {"method": "task_arithmetic", "params": chosen["task_arithmetic"]["params"]})
        del states
        rows.update(twin)
        parts.task_models.update(twin_summaries)
        parts.timed(TWIN_ROW, begun)  # both rows: one shared model, one set of parts
        parts.say(f"twin-merging told the task: normalised exact match "
                  f"{100 * _normalised_mean(rows[TWIN_GIVEN_ROW], own, 'exact_match'):.1f} %")
        if learned:
            begun = time.perf_counter()
            start = merge_folder(tmp, "iso_c", chosen["iso_c"]["params"])  # as validation chose
            model, parts.summaries[LEARNED_ROW] = atlas_row(judge, tasks, experts, Path(tmp) / "atlas", start,
                                                            {**ATLAS, "steps": 4} if quick else ATLAS, learning_log)
            parts.summaries[LEARNED_ROW]["start"] = {"method": "iso_c", "params": chosen["iso_c"]["params"]}
            rows[LEARNED_ROW] = judge.model_scores(model, "test")
            del model
            parts.timed(LEARNED_ROW, begun)
        begun = time.perf_counter()
        moe, moe_summary = judge.upcycle(tasks, experts, Path(tmp) / "moe",
                                         {**MOE_TUNING, "steps": 20} if quick else MOE_TUNING, parts.say)
        parts.moe_tuning = moe_summary["tune_router"]
        rows[MOE_ROW] = judge.model_scores(moe, "test")
        parts.timed(MOE_ROW, begun)
    if fusion:  # decode-time rows: base as both large and small model, all experts offered at every step
        rows.update(fusion_rows(judge, tasks, experts, own, parts.say))


def merge_folder(tmp: str, method: str, params: dict) -> Path:
    """Where the grid loop writes `method`'s merge at `params` (later rows start from some of them)."""
    return Path(tmp) / f"{method}-{GRIDS[method].index(params)}"


def best_on_validation(judge: "Judge", grid: list, build: Callable, own: dict) -> tuple[dict, dict]:
    """Test scores of the model `build(params)` gives at the grid point best on validation (a single point is
    taken as it is), and the trials that chose it. Each trial's model is kept, so the best is not built twice.
    Validation decides by exact match alone, so it skips the likelihood scores (about a third of a pass)."""
    trials, models = [], []
    for params in grid:
        models.append(build(params))
        trial = {"params": params}
        if len(grid) > 1:
            trial["validation"] = judge.model_scores(models[-1], "validation", likelihood=False)
        trials.append(trial)
    best = max(range(len(grid)), key=lambda i: _normalised_mean(trials[i].get("validation", {}), own, "exact_match"))
    return judge.model_scores(models[best], "test"), {"params": grid[best], "trials": trials}


def fusion_rows(judge, tasks, experts, own, say: Log) -> dict:
    from .fusion import evaluate_fused

    base = judge.load(judge.base)
    models = [judge.load_adapter(experts[t.name].adapter) for t in tasks]
    rows = {}
    for mode in ("proxy", "dynamic"):
        begun = time.perf_counter()
        name = f"logit fusion ({'proxy tuning' if mode == 'proxy' else 'dynamic'}, {len(models)} experts)"
        rows[name] = {t.name: asdict(evaluate_fused(base, base, models, judge.tok, t, "test", mode)) for t in tasks}
        say(f"{name}: normalised exact match "
            f"{100 * _normalised_mean(rows[name], own, 'exact_match'):.1f} % in {time.perf_counter() - begun:.0f} s")
    return rows


class Judge:
    """Loads models on the benchmark's base and scores them on every task."""

    def __init__(self, base: Path, tasks):
        from transformers import AutoTokenizer
        self.base, self.tasks = base, tasks
        self.tok = AutoTokenizer.from_pretrained(base)

    def chat(self, prompt: str) -> str:
        """The user's message in the chat template, up to where the assistant's reply starts."""
        return self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                            add_generation_prompt=True)

    def load(self, folder: Path):
        from transformers import AutoModelForCausalLM
        return AutoModelForCausalLM.from_pretrained(folder).eval()

    def load_adapter(self, adapter: Path):
        from peft import PeftModel
        return PeftModel.from_pretrained(self.load(self.base), str(adapter)).merge_and_unload().eval()

    def merge(self, method: str, params: dict, experts, out: Path):
        from .. import api
        spec = {"method": method, "models": [{"path": e.ref(self.base)} for e in experts.values()], "params": params,
                "dtype": "float32", **({} if method == "linear" else {"base": str(self.base)})}
        api.merge(spec, out)
        return self.load(out)

    def library(self, experts):
        from ..routing.library import LoraLibrary
        return LoraLibrary.from_adapters(self.base, {name: e.adapter for name, e in experts.items()})

    def arrow(self, library, top_k: int):
        """The base with every LoRA expert of `library` attached to its modules, each token routed to its top-k by
        Arrow."""
        from ..routing.arrow import ArrowRouter
        from ..routing.modules import route
        return route(self.load(self.base), library, lambda name, updates, module: ArrowRouter.for_updates(
            updates, module.in_features, top_k)).eval()

    def upcycle(self, tasks, experts, out: Path, tuning: dict | None = None, log: Log | None = None):
        """A Mixtral of the experts' MLPs; each layer's router fitted to send the tokens of a task's chat-formatted
        training prompts to that task's expert, then (with `tuning`) every router tuned through the MoE on the
        next-token loss of the tasks' training answers. Returns the model and upcycle's summary."""
        from ..programs.moe import load_moe_spec, upcycle

        spec = {"base": str(self.base), "dtype": "float32", "router_init": "trained", "experts": [
            {"path": experts[t.name].ref(self.base),
             "positive_prompts": [self.chat(e.prompt) for e in t.splits["train"][:MOE_PROMPTS]],
             "examples": [{"prompt": self.chat(e.prompt), "completion": t.answers[e.answer] + self.tok.eos_token}
                          for e in t.splits["train"][:MOE_EXAMPLES]]} for t in tasks]}
        if tuning:
            spec["tune_router"] = tuning

        def progress(step: int, steps: int, loss: float) -> None:
            if log and (step % 10 == 0 or step == steps):
                log(f"moe router tuning {step}/{steps}: loss {loss:.3f}")
        summary = upcycle(load_moe_spec(spec), out, progress)
        return self.load(out), summary

    def model_scores(self, model, split: str, likelihood: bool = True) -> dict[str, dict]:
        return {t.name: asdict(evaluate(model, self.tok, t, split, likelihood=likelihood)) for t in self.tasks}


def _normalised_mean(scores: dict[str, dict], own: dict[str, dict], metric: str) -> float:
    ratios = [scores[t][metric] / own[t][metric] for t in scores if own[t][metric] > 0]
    return sum(ratios) / len(ratios) if ratios else 0.0


def _clock(started: float) -> str:
    seconds = int(time.perf_counter() - started)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
