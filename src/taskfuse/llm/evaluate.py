"""Judge a causal LM on the LLM tasks by what it answers, in its chat template:

- exact match: the greedy reply, up to the end of the turn, equals the answer (case and surrounding blanks and a
  final full stop aside);
- likelihood accuracy: the answer whose tokens (and the end-of-turn token) the model finds most likely is the right
  one, the multiple-choice score that does not depend on the model stopping where it should.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .tasks import Example, LLMTask


@dataclass(frozen=True)
class Score:
    exact_match: float
    likelihood_accuracy: float
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
def evaluate(model, tok, task: LLMTask, split: str = "test", batch: int = 32) -> Score:
    examples = task.splits[split]
    prompts = [prompt_ids(tok, e.prompt) for e in examples]
    replies = [reply_ids(tok, a) for a in task.answers]
    likely = _likelihood_choices(model, tok, prompts, replies, batch)
    generated = _greedy(model, tok, prompts, max(len(r) for r in replies) + 1, batch)
    em = sum(normalise(g) == normalise(task.answers[e.answer]) for g, e in zip(generated, examples))
    ll = sum(choice == e.answer for choice, e in zip(likely, examples))
    return Score(em / len(examples), ll / len(examples), len(examples))


def _likelihood_choices(model, tok, prompts: list[list[int]], replies: list[list[int]], batch: int) -> list[int]:
    pairs = [(p, r) for p in prompts for r in replies]
    totals = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        width = max(len(p) + len(r) for p, r in chunk)
        ids = torch.full((len(chunk), width), tok.pad_token_id or 0)
        mask = torch.zeros_like(ids)
        for i, (p, r) in enumerate(chunk):
            ids[i, :len(p) + len(r)] = torch.tensor(p + r)
            mask[i, :len(p) + len(r)] = 1
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for i, (p, r) in enumerate(chunk):
            positions = torch.arange(len(p) - 1, len(p) + len(r) - 1)
            totals.append(logprobs[i, positions, torch.tensor(r)].sum().item())
    per_prompt = torch.tensor(totals).view(len(prompts), len(replies))
    return per_prompt.argmax(1).tolist()


def _greedy(model, tok, prompts: list[list[int]], max_new: int, batch: int) -> list[str]:
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        width = max(len(p) for p in chunk)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.full((len(chunk), width), pad)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(chunk):  # left padding: every prompt ends where generation starts
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        new = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=pad, eos_token_id=tok.eos_token_id)[:, width:]
        out += [tok.decode(row, skip_special_tokens=True) for row in new]
    return out


def examples_count(task: LLMTask, split: str) -> int:
    return len(task.splits[split])


__all__ = ["Example", "Score", "evaluate", "normalise", "prompt_ids", "reply_ids"]
