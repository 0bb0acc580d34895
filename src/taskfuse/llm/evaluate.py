"""Judge a causal LM on the LLM tasks by what it answers, in its chat template:

- exact match: the greedy reply, up to the end of the turn, equals the answer (case and surrounding blanks and a
  final full stop aside);
- likelihood accuracy: the answer whose tokens (and the end-of-turn token) the model finds most likely is the right
  one, the multiple-choice score that does not depend on the model stopping where it should.
"""
from __future__ import annotations

import copy
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
    # batches of similar length: a batch costs its longest prompt times its size
    examples = sorted(task.splits[split], key=lambda e: len(e.prompt))
    replies = [reply_ids(tok, a) for a in task.answers]
    em = ll = 0
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        generated, choices = score_batch(model, tok, [prompt_ids(tok, e.prompt) for e in chunk], replies)
        em += sum(normalise(g) == normalise(task.answers[e.answer]) for g, e in zip(generated, chunk))
        ll += sum(c == e.answer for c, e in zip(choices, chunk))
    return Score(em / len(examples), ll / len(examples), len(examples))


def score_batch(model, tok, prompts: list[list[int]], replies: list[list[int]]) -> tuple[list[str], list[int]]:
    """Greedy replies and likelihood choices for a batch of prompts, from one pass over the prompts: their key/value
    cache serves every candidate reply and the greedy steps (the prompt is nearly all the tokens)."""
    ids, mask, positions = left_padded(prompts, pad_id(tok))
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1].float().log_softmax(-1)
    scores = torch.stack([_reply_logprob(model, copy.deepcopy(out.past_key_values), first, mask, positions, r)
                          for r in replies], 1)
    greedy = _greedy(model, out.past_key_values, first, mask, positions, max(len(r) for r in replies) + 1,
                     tok.eos_token_id)
    return [tok.decode(row, skip_special_tokens=True) for row in greedy], scores.argmax(1).tolist()


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, attention mask and position ids of left-padded prompts: every prompt ends where the reply starts."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _continue(model, cache, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor):
    """Feed `tokens` (batch × n) after what `cache` holds; the logits for each of them."""
    n = tokens.shape[1]
    mask = torch.cat([mask, torch.ones(mask.shape[0], n, dtype=mask.dtype)], 1)
    steps = positions[:, -1:] + torch.arange(1, n + 1)
    return model(input_ids=tokens, attention_mask=mask, position_ids=steps, past_key_values=cache,
                 use_cache=True).logits.float().log_softmax(-1), mask, torch.cat([positions, steps], 1)


def _reply_logprob(model, cache, first, mask, positions, reply: list[int]) -> torch.Tensor:
    batch = first.shape[0]
    total = first[:, reply[0]].clone()
    if len(reply) > 1:
        logprobs = _continue(model, cache, torch.tensor(reply[:-1]).expand(batch, -1), mask, positions)[0]
        total += logprobs.gather(-1, torch.tensor(reply[1:]).expand(batch, -1).unsqueeze(-1)).squeeze(-1).sum(-1)
    return total


def _greedy(model, cache, first, mask, positions, max_new: int, eos: int) -> list[list[int]]:
    token = first.argmax(-1)
    tokens, done = [token], token == eos
    while len(tokens) < max_new and not bool(done.all()):
        logprobs, mask, positions = _continue(model, cache, token[:, None], mask, positions)
        token = logprobs[:, -1].argmax(-1)
        tokens.append(token)
        done |= token == eos
    return up_to_eos(torch.stack(tokens, 1).tolist(), eos)


def up_to_eos(rows: list[list[int]], eos: int) -> list[list[int]]:
    """Each generated row cut before its first end-of-turn token."""
    return [row[:row.index(eos)] if eos in row else row for row in rows]


__all__ = ["Example", "Score", "evaluate", "normalise", "prompt_ids", "reply_ids", "score_batch"]
