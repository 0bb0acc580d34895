"""Judge a causal LM on the LLM tasks by what it answers, in its chat template:

- exact match: the greedy reply, up to the end of the turn, equals the answer (case and surrounding blanks and a
  final full stop aside);
- likelihood accuracy: the answer whose tokens (and the end-of-turn token) the model finds most likely is the right
  one, the multiple-choice score that does not depend on the model stopping where it should.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .decoding import Combine, alone, greedy, pad_id, prefill, reply_scores
from .tasks import Example, LLMTask


@dataclass(frozen=True)
class Score:
    exact_match: float
    likelihood_accuracy: float | None  # None where only exact match was asked for
    n: int


def prompt_ids(tok, prompt: str) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def reply_ids(tok, answer: str) -> list[int]:
    """The answer as the assistant's turn writes it: its tokens, then the end-of-turn token."""
    return tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id]


def normalise(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


@torch.inference_mode()
def evaluate(model, tok, task: LLMTask, split: str = "test", batch: int = 16, likelihood: bool = True) -> Score:
    return evaluate_combined([model], alone, tok, task, split, batch, likelihood)


@torch.inference_mode()
def evaluate_combined(models: list, combine: Combine, tok, task: LLMTask, split: str = "test",
                      batch: int = 16, likelihood: bool = True) -> Score:
    """Both scores for the distribution `combine` makes of the models' (one model's own, or a fusion); exact match
    alone without `likelihood` (scoring every answer after every prompt costs about as much as the prompts do)."""
    # batches of similar length: a batch costs its longest prompt times its size (compute-bound here: 16
    # prompts of ~70 tokens already keep the matrix units busy)
    examples = sorted(task.splits[split], key=lambda e: len(e.prompt))
    replies = [reply_ids(tok, a) for a in task.answers]
    em = ll = 0
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        generated, choices = score_batch(models, combine, tok, [prompt_ids(tok, e.prompt) for e in chunk], replies,
                                         likelihood)
        em += sum(normalise(g) == normalise(task.answers[e.answer]) for g, e in zip(generated, chunk))
        ll += sum(c == e.answer for c, e in zip(choices, chunk))
    return Score(em / len(examples), ll / len(examples) if likelihood else None, len(examples))


def score_batch(models: list, combine: Combine, tok, prompts: list[list[int]], replies: list[list[int]],
                likelihood: bool = True) -> tuple[list[str], list[int]]:
    """Greedy replies (up to one token past the longest answer) and, with `likelihood`, likelihood choices for a
    batch of prompts, from one prefill of them per model."""
    state = prefill(models, prompts, pad_id(tok))
    choices = reply_scores(state, replies, combine).argmax(1).tolist() if likelihood else []
    greedy_ids = greedy(state, max(len(r) for r in replies) + 1, tok.eos_token_id, combine)
    return [tok.decode(row, skip_special_tokens=True) for row in greedy_ids], choices


__all__ = ["Example", "Score", "evaluate", "evaluate_combined", "normalise", "prompt_ids", "reply_ids",
           "score_batch"]
