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

import copy
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
    distribution at each of its tokens; the caches are left as they were. Replies of one length go through one
    forward pass per model together (the batch's cache repeated once per reply): padding every reply to the
    longest would repeat the cache for tokens nobody scores, and that copying is most of the cost."""
    scores = combine(state.logprobs)[:, [r[0] for r in replies]]
    for length in sorted({len(r) for r in replies} - {1}):
        group = [j for j, r in enumerate(replies) if len(r) == length]
        scores[:, group] += _continuation_logprob(state, [replies[j] for j in group], combine)
    return scores


def _continuation_logprob(state: Prefilled, replies: list[list[int]], combine: Combine) -> torch.Tensor:
    """For replies of one length: the log-probability (batch × replies) of every token after the first."""
    batch, count = state.mask.shape[0], len(replies)
    inputs = torch.tensor([r[:-1] for r in replies]).repeat(batch, 1)  # row b·count + j: prompt b, reply j
    targets = torch.tensor([r[1:] for r in replies]).repeat(batch, 1)
    mask, positions = state.mask.repeat_interleave(count, 0), state.positions.repeat_interleave(count, 0)
    steps = []
    for model, cache in zip(state.models, state.caches):
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(count)
        steps.append(continue_from(model, cache, inputs, mask, positions)[0])
    total = torch.zeros(batch * count)
    for k in range(inputs.shape[1]):
        total += combine([s[:, k] for s in steps]).gather(1, targets[:, k:k + 1]).squeeze(1)
    return total.view(batch, count)


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
