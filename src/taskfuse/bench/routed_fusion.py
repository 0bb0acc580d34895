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
def routed_fusion_scores(large, small, expert: Callable[[str], nn.Module], router: nn.Module, tok, tasks,
                         mode: str = "dynamic", trace: FusionTrace | None = None) -> tuple[dict, dict]:
    """Each task's test scores when every question is fused with the expert the router picks for it (`expert`
    gives the model of a task by name), and per task the share of its questions sent to each expert."""
    names = [t.name for t in tasks]
    scores, picks = {}, {}
    for task in tasks:
        questions = task.splits["test"]
        picked = pick_experts(router, small, tok, [e.prompt for e in questions])
        em = ll = 0.0
        for j in sorted(set(picked)):
            chosen = tuple(e for e, p in zip(questions, picked) if p == j)
            score = evaluate_combined([large, small, expert(names[j])], combination(mode, trace), tok,
                                      replace(task, splits={**task.splits, "test": chosen}), "test")
            em += score.exact_match * len(chosen)  # the subsets' fractions back to counts
            ll += score.likelihood_accuracy * len(chosen)
        scores[task.name] = asdict(replace(score, exact_match=em / len(questions),
                                           likelihood_accuracy=ll / len(questions), n=len(questions)))
        picks[task.name] = {names[j]: round(picked.count(j) / len(picked), 3) for j in sorted(set(picked))}
    return scores, picks
