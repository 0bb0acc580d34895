"""`taskfuse bench --llm --routing`: the LLM benchmark's LoRA experts composed by routing instead of merging, on
the same tasks, judged as the LLM benchmark judges (llm/bench.py): Arrow (training-free, top-k chosen on
validation, as there), PHATGOOSE (a gate per expert and module trained on that expert's own train answers, then
top-2 per token; routing/phatgoose.py) and MHR (per-task routing over head blocks of the experts' factors, learnt on
each task's train answers and given the task at test; routing/mhr.py).

Decided here: gates and routings learn for ROUTED_STEPS steps of 8 questions, as many as the experts themselves
trained (the papers take 100; each step here runs forward and backward through the whole 135M-parameter model, so
100 would be about 25 minutes per method on 2 cores); the encoder routing study's heads (8) and routing rate."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict

import torch

from ..bench.routing_rows import MHR_HEADS, MHR_ROUTING_LR, PHATGOOSE_TOP_K
from .evaluate import evaluate
from .zoo import answer_pairs, prompt_opening, reply_loss, sampled_batches

PHATGOOSE_ROW = "phatgoose (per-token top-2 over gates trained on each expert's own train answers)"
MHR_ROW = "mhr (per-task routing over 8 head blocks of the experts' factors, learnt on each task's train answers)"
ROUTED_STEPS, ROUTED_BATCH = 30, 8
Log = Callable[[str], None]


def phatgoose_row(judge, tasks, library, steps: int = ROUTED_STEPS, log: Log | None = None) -> tuple[dict, dict]:
    """Test scores of the base with every expert of `library` routed per token by PHATGOOSE, and how it learnt."""
    from ..routing.modules import route
    from ..routing.phatgoose import PhatgooseRouter, gate_matrix, train_gates

    begun, gates, losses = time.perf_counter(), {}, {}
    for task in tasks:
        losses[task.name] = []
        gates[task.name] = train_gates(lambda: judge.load(judge.base), library, task.name,
                                       train_batches(judge, task), _recorded(reply_answer_loss, losses[task.name]),
                                       steps=steps)
        if log:
            log(f"phatgoose gates of {task.name}: loss {losses[task.name][0]:.3f} -> {losses[task.name][-1]:.3f}")
    seconds = time.perf_counter() - begun
    model = route(judge.load(judge.base), library, lambda name, updates, module: PhatgooseRouter(
        gate_matrix(library, gates, name, module.in_features), PHATGOOSE_TOP_K)).eval()
    return judge.model_scores(model, "test"), _summary(losses, steps, seconds, "gates: each expert's own task's")


def mhr_row(judge, tasks, library, steps: int = ROUTED_STEPS, log: Log | None = None) -> tuple[dict, dict]:
    """Test scores of the base with MHR over `library`, one routing per task learnt on its train answers (the
    skills stay the experts' factors), each task judged with its own routing; and how it learnt."""
    from ..routing.mhr import adapt, mhr_modules, route_mhr, use_task

    begun, losses = time.perf_counter(), {}
    model = route_mhr(judge.load(judge.base), library, MHR_HEADS, tasks=len(tasks))
    for i, task in enumerate(tasks):
        def loss(m, ids, mask, labels, i=i):
            use_task(m, i)
            return reply_answer_loss(m, ids, mask, labels)
        losses[task.name] = adapt(model, train_batches(judge, task), loss, steps, MHR_ROUTING_LR)
        if log:
            log(f"mhr routing of {task.name}: loss {losses[task.name][0]:.3f} -> {losses[task.name][-1]:.3f}")
    seconds = time.perf_counter() - begun
    model.eval()
    scores = {}
    for i, task in enumerate(tasks):
        use_task(model, i)
        scores[task.name] = asdict(evaluate(model, judge.tok, task, "test"))
    summary = _summary(losses, steps, seconds, "routing: each task's")
    # how often a task's routing puts its own expert first, over every module's head blocks
    logits = torch.stack([m.logits.detach() for m in mhr_modules(model)])  # modules × tasks × heads × experts
    summary["own_expert_first"] = {t.name: round(float((logits[:, i].argmax(-1) == library.experts.index(t.name))
                                                       .float().mean()), 3)
                                   for i, t in enumerate(tasks) if t.name in library.experts}
    return scores, summary


def train_batches(judge, task, batch: int = ROUTED_BATCH, seed: int = 0) -> Iterator:
    """Endless (ids, mask, labels) batches of the task's train questions with their answers, drawn as the experts'
    training draws them."""
    for ids, labels, mask in sampled_batches(answer_pairs(judge.tok, task), judge.tok, batch, seed):
        yield ids, mask, labels


def reply_answer_loss(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The next-token loss on the answers, the rows' shared opening run once (as the experts trained)."""
    return reply_loss(model, ids, mask, labels, prompt_opening(ids, labels))


def _recorded(loss_fn, record: list[float]):
    def recording(*args):
        loss = loss_fn(*args)
        record.append(loss.item())
        return loss
    return recording


def _summary(losses: dict[str, list[float]], steps: int, seconds: float, what: str) -> dict:
    losses = {task: [round(x, 4) for x in values] for task, values in losses.items()}
    return {"steps": steps, "batch_size": ROUTED_BATCH, "learn_seconds": round(seconds, 1),
            "data_seen": f"{what} train questions with their answers, {steps} batches of {ROUTED_BATCH}",
            "losses_per_task": losses,
            # the learning curve the report draws: each step's loss averaged over the tasks
            "losses": [round(sum(step) / len(step), 4) for step in zip(*losses.values())]}
