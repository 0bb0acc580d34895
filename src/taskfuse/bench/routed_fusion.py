"""Decode-time fusion when the task is not given: a router on the small model's reading of the prompt picks one
expert per question, and Dynamic Logits Fusion (llm/fusion.py) steers the large model with that expert alone.

Why: offered every expert at every step, fusion has to guess the task from next-token distributions, and the rule
it uses (apply the expert that moves furthest from the small model) picks an expert that always wants to say its
own labels, whatever the question (1.2 % of the experts' exact match in the weak-to-strong study). The prompt says
which task it is; reading it once is what Twin-Merging's router does (routing/twin.py) and costs one forward pass
of the small model, where the all-experts row runs every expert at every step.

Decided here: the router (routing/prompt_router.py) reads the small model's hidden states and learns from train
questions labelled only by their task (no answers); top-1, since a key/value cache per expert serves one expert per
question."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Callable

import torch
from torch import nn

from ..llm.evaluate import evaluate_combined
from ..llm.fusion import FusionTrace, combination
from ..llm.task_models import ROUTER_EXAMPLES
from ..routing.prompt_router import pick_experts, train_prompt_router

ROUTED_DATA = f"{ROUTER_EXAMPLES} train questions per task, labelled only by their task (router); no answers"


def prompt_router(small, tok, tasks, examples: int = ROUTER_EXAMPLES, seed: int = 0) -> nn.Module:
    """The prompt router (routing/prompt_router.py) trained to tell `tasks` apart from the first `examples` of each
    one's train questions."""
    return train_prompt_router(small, tok, [[e.prompt for e in t.splits["train"][:examples]] for t in tasks], seed)


@torch.inference_mode()
def routed_fusion_scores(large, small, load_expert: Callable[[str], nn.Module], router: nn.Module, tok, tasks,
                         mode: str = "dynamic", trace: FusionTrace | None = None) -> tuple[dict, dict]:
    """Each task's test scores when every question is fused with the expert the router picks for it, and per task
    the share of its questions sent to each expert. `load_expert` gives the model of a task by name; it is called
    once per expert the router picked, and that expert is let go before the next one is loaded, so the row holds
    one expert at a time whatever the library's size."""
    names = [t.name for t in tasks]
    picked = {t.name: pick_experts(router, small, tok, [e.prompt for e in t.splits["test"]]) for t in tasks}
    matched = {t.name: [0.0, 0.0] for t in tasks}  # exact and likelihood-accurate answers, as counts
    last = {}
    for j in sorted(set().union(*picked.values())):
        expert = load_expert(names[j])
        for task in tasks:
            chosen = tuple(e for e, p in zip(task.splits["test"], picked[task.name]) if p == j)
            if not chosen:
                continue
            score = evaluate_combined([large, small, expert], combination(mode, trace), tok,
                                      replace(task, splits={**task.splits, "test": chosen}), "test")
            matched[task.name][0] += score.exact_match * len(chosen)  # the subsets' fractions back to counts
            matched[task.name][1] += (score.likelihood_accuracy or 0.0) * len(chosen)
            last[task.name] = score
        del expert
    scores, picks = {}, {}
    for task in tasks:
        n, chosen = len(task.splits["test"]), picked[task.name]
        em, ll = matched[task.name]
        likelihood = None if last[task.name].likelihood_accuracy is None else ll / n
        scores[task.name] = asdict(replace(last[task.name], exact_match=em / n, likelihood_accuracy=likelihood, n=n))
        picks[task.name] = {names[j]: round(chosen.count(j) / len(chosen), 3) for j in sorted(set(chosen))}
    return scores, picks
