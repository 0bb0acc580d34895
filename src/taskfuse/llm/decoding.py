"""Batched decoding over one causal LM, or several sharing a tokenizer, from one prefill of the prompts per model:
the likelihood of candidate replies and greedy replies both continue from those key/value caches (the prompt is
nearly all the tokens). Each step combines the models' next-token log-probabilities with a `Combine`: a single
model's own (`alone`, the benchmark's judge) or a decode-time fusion of several (llm/fusion.py).

Prompts of one batch share their opening (chat template, system turn, the task's answer list and question): it is
computed once at batch size 1 and its cache repeated, and only the rest of each prompt is left-padded after it.
That is exact (the pads are masked out and positions continue across them) and saves 49-77 % of the benchmark's
prompt tokens, depending on the task.
"""
from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass
from typing import Callable

import torch

Combine = Callable[[list[torch.Tensor]], torch.Tensor]  # each model's log-probabilities (batch × vocab) → one


def alone(logprobs: list[torch.Tensor]) -> torch.Tensor:
    return logprobs[0]


@dataclass
class Prefilled:
    """Every model's cache and next-token log-probabilities after the prompts, with the batch's mask and positions."""

    models: list
    caches: list
    logprobs: list[torch.Tensor]
    mask: torch.Tensor
    positions: torch.Tensor


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


def shared_opening(prompts: list[list[int]]) -> int:
    """How many leading tokens every prompt shares, leaving each at least one token of its own."""
    length = len(os.path.commonprefix(prompts))
    return max(0, min(length, min(len(p) for p in prompts) - 1))


def with_cache(cache) -> dict:
    """The keyword argument that hands `model` a key/value cache: `cache` (transformers 5.x, which deprecates
    `past_key_values` and drops it in 5.40) or `past_key_values` (before that; pyproject allows transformers 4.40).
    `model` may be a functional wrapper without a forward signature: the installed release decides for all."""
    return {_cache_keyword(): cache}


@functools.cache
def _cache_keyword() -> str:
    from transformers import LlamaModel  # the renaming is library-wide: one architecture tells
    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def returned_cache(output):
    """The key/value cache a forward pass with use_cache=True returned, under either name."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def prefill(models: list, prompts: list[list[int]], pad: int) -> Prefilled:
    shared = shared_opening(prompts)
    ids, rest_mask, rest_positions = left_padded([p[shared:] for p in prompts], pad)
    batch = len(prompts)
    mask = torch.cat([torch.ones(batch, shared, dtype=rest_mask.dtype), rest_mask], 1)
    positions = torch.cat([torch.arange(shared).expand(batch, -1), rest_positions + shared], 1)
    caches, logprobs = [], []
    for model in models:
        cache = None
        if shared:
            cache = returned_cache(model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True,
                                         logits_to_keep=1))
            cache.batch_repeat_interleave(batch)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions[:, shared:],
                    **with_cache(cache), use_cache=True, logits_to_keep=1)
        caches.append(returned_cache(out))
        logprobs.append(out.logits[:, -1].float().log_softmax(-1))
    return Prefilled(list(models), caches, logprobs, mask, positions)


def continue_from(model, cache, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor):
    """Feed `tokens` (batch × n) after what `cache` holds: the log-probabilities after each of them, and the
    extended mask and positions."""
    n = tokens.shape[1]
    mask = torch.cat([mask, torch.ones(mask.shape[0], n, dtype=mask.dtype)], 1)
    steps = positions[:, -1:] + torch.arange(1, n + 1)
    return model(input_ids=tokens, attention_mask=mask, position_ids=steps, **with_cache(cache),
                 use_cache=True).logits.float().log_softmax(-1), mask, torch.cat([positions, steps], 1)


def reply_scores(state: Prefilled, replies: list[list[int]], combine: Combine) -> torch.Tensor:
    """Log-likelihood (batch × replies) of every candidate reply after every prompt, under the combined
    distribution at each of its tokens; the caches are left as they were."""
    scores = combine(state.logprobs)[:, [r[0] for r in replies]]
    longer = [j for j, r in enumerate(replies) if len(r) > 1]
    if longer:
        scores[:, longer] += _continuation_logprob(state, [replies[j] for j in longer], combine)
    return scores


def _continuation_logprob(state: Prefilled, replies: list[list[int]], combine: Combine) -> torch.Tensor:
    """The log-probability (batch × replies) of every reply's tokens after its first. All replies continue each
    prompt in one row, packed one after another: a 4D mask lets a reply's tokens see the prompt and their own
    reply's earlier tokens only, and their positions continue the prompt's, so each token's distribution is the one
    it has with its reply alone. Why: a row per reply repeated the prompt's cache once per reply, and that copying
    was about a third of a test pass. The cache is cropped back to the prompt afterwards."""
    batch = state.mask.shape[0]
    owner = torch.cat([torch.full((len(r) - 1,), j) for j, r in enumerate(replies)])
    offset = torch.cat([torch.arange(len(r) - 1) for r in replies])
    inputs = torch.tensor([t for r in replies for t in r[:-1]]).expand(batch, -1)
    targets = torch.tensor([t for r in replies for t in r[1:]]).expand(batch, -1)
    own_reply = (owner[:, None] == owner[None, :]) & (offset[:, None] >= offset[None, :])  # packed × packed
    sees = torch.cat([state.mask.bool()[:, None, :].expand(-1, len(owner), -1),
                      own_reply.expand(batch, -1, -1)], 2)[:, None]  # batch × 1 × packed × (prompt + packed)
    positions = state.positions[:, -1:] + 1 + offset
    total = torch.zeros(batch, len(owner))
    steps = []
    for model, cache in zip(state.models, state.caches):
        dtype = next(model.parameters()).dtype
        # additive form: what both the eager and the SDPA attention take as a ready-made mask
        mask = torch.zeros(sees.shape, dtype=dtype).masked_fill(~sees, torch.finfo(dtype).min)
        logits = model(input_ids=inputs, attention_mask=mask, position_ids=positions, **with_cache(cache),
                       use_cache=True).logits
        cache.crop(-len(owner))  # negative: tokens to drop, in transformers 4 and 5 alike
        steps.append(logits.float().log_softmax(-1))
    for k in range(len(owner)):
        total[:, k] = combine([s[:, k] for s in steps]).gather(1, targets[:, k:k + 1]).squeeze(1)
    return torch.zeros(batch, len(replies)).index_add_(1, owner, total)


def greedy(state: Prefilled, max_new: int, eos: int, combine: Combine) -> list[list[int]]:
    """Greedy replies under the combined distribution, each cut before its end-of-turn token. Extends the caches:
    score replies first."""
    logprobs, mask, positions = list(state.logprobs), state.mask, state.positions
    tokens, done = [], torch.zeros(mask.shape[0], dtype=torch.bool)
    while True:
        token = combine(logprobs).argmax(-1)
        tokens.append(token)
        done |= token == eos
        if len(tokens) == max_new or bool(done.all()):
            break
        for i, (model, cache) in enumerate(zip(state.models, state.caches)):
            step, step_mask, step_positions = continue_from(model, cache, token[:, None], mask, positions)
            logprobs[i] = step[:, -1]
        mask, positions = step_mask, step_positions
    return up_to_eos(torch.stack(tokens, 1).tolist(), eos)


def up_to_eos(rows: list[list[int]], eos: int) -> list[list[int]]:
    """Each generated row cut before its first end-of-turn token."""
    return [row[:row.index(eos)] if eos in row else row for row in rows]
