"""Decode-time composition: Dynamic Logits Fusion (Fan et al. 2024, "On Giant's Shoulders: Effortless Weak to
Strong by Dynamic Logits Fusion", arXiv 2406.15480; no public code) and proxy tuning as its baseline.

A large model L is steered by small experts t fine-tuned from a small model S that shares L's tokenizer:

    next-token distribution = softmax(z_L + α_t (z_t − z_S))

Proxy tuning fixes α = 1. Dynamic fusion picks α at every step so that the fused model moves away from L as far as
the expert moves away from S, in both directions of the KL divergence:

    α_t = argmin over α ∈ {0, 0.1, ..., 2} of |KL(P_α ‖ P_L) − KL(P_t ‖ P_S)| + |KL(P_L ‖ P_α) − KL(P_S ‖ P_t)|

With several experts each is searched alone and one is applied per step. Decided here, where the paper's text
available to us is not specific: the applied expert is the one that moves furthest from S on this context
(largest KL(P_t ‖ P_S)), i.e. the expert that recognises the input as its own; the matching error is summed with
equal weight for the two directions. Every model keeps its own key/value cache; a step costs one token's forward
pass per model.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

ALPHAS = torch.linspace(0, 2, 21)


@dataclass
class FusionTrace:
    """Per generated token (batch × steps): the α applied and the expert it came from."""

    alphas: list[torch.Tensor] = field(default_factory=list)
    experts: list[torch.Tensor] = field(default_factory=list)


def kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) over the last dimension, from log-probabilities."""
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def dynamic_alpha(large: torch.Tensor, small: torch.Tensor, expert: torch.Tensor,
                  alphas: torch.Tensor = ALPHAS) -> tuple[torch.Tensor, torch.Tensor]:
    """For log-probabilities (batch × vocab) of L, S and one expert: the α each row matches best, and the
    expert's own shift KL(P_t ‖ P_S)."""
    target_forward, target_backward = kl(expert, small), kl(small, expert)
    fused = torch.log_softmax(large[:, None] + alphas[None, :, None] * (expert - small)[:, None], -1)  # B×A×V
    error = ((kl(fused, large[:, None]) - target_forward[:, None]).abs()
             + (kl(large[:, None], fused) - target_backward[:, None]).abs())
    return alphas[error.argmin(1)], target_forward


def fuse(large: torch.Tensor, small: torch.Tensor, experts: list[torch.Tensor], mode: str = "dynamic",
         trace: FusionTrace | None = None) -> torch.Tensor:
    """The fused log-probabilities for one step (batch × vocab)."""
    if mode == "proxy":
        chosen = torch.stack([kl(e, small) for e in experts], 1).argmax(1)
        alpha = torch.ones(large.shape[0])
    elif mode == "dynamic":
        found = [dynamic_alpha(large, small, e) for e in experts]
        alphas, shifts = torch.stack([a for a, _ in found], 1), torch.stack([s for _, s in found], 1)
        chosen = shifts.argmax(1)
        alpha = alphas.gather(1, chosen[:, None]).squeeze(1)
    else:
        raise ValueError(f"fusion mode {mode!r}: use 'dynamic' or 'proxy'")
    expert = torch.stack(experts, 1)[torch.arange(large.shape[0]), chosen]
    if trace is not None:
        trace.alphas.append(alpha)
        trace.experts.append(chosen)
    return torch.log_softmax(large + alpha[:, None] * (expert - small), -1)


@torch.inference_mode()
def fused_greedy(large, small, experts: list, prompts: list[list[int]], max_new: int, eos: int, pad: int,
                 mode: str = "dynamic", trace: FusionTrace | None = None) -> list[list[int]]:
    """Greedy replies to `prompts` (token ids) under the fused distribution; every model keeps its own cache."""
    state = _prefill([large, small, *experts], prompts, pad)
    return _greedy(state, max_new, eos, mode, trace)


@torch.inference_mode()
def evaluate_fused(large, small, experts: list, tok, task, split: str = "test", mode: str = "dynamic",
                   batch: int = 16):
    """The LLM benchmark's two scores for the fused model: exact match of its greedy reply, and the answer its
    fused distribution finds most likely (each reply token scored under the fusion applied at that step)."""
    from .evaluate import Score, normalise, pad_id, prompt_ids, reply_ids

    examples = sorted(task.splits[split], key=lambda e: len(e.prompt))
    replies = [reply_ids(tok, a) for a in task.answers]
    em = ll = 0
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        state = _prefill([large, small, *experts], [prompt_ids(tok, e.prompt) for e in chunk], pad_id(tok))
        choices = _likeliest(state, replies, mode)
        generated = _greedy(state, max(len(r) for r in replies) + 1, tok.eos_token_id, mode, None)
        em += sum(normalise(tok.decode(g, skip_special_tokens=True)) == normalise(task.answers[e.answer])
                  for g, e in zip(generated, chunk))
        ll += sum(c == e.answer for c, e in zip(choices, chunk))
    return Score(em / len(examples), ll / len(examples), len(examples))


@dataclass
class _State:
    models: list
    caches: list
    logprobs: list  # each model's next-token log-probabilities (batch × vocab)
    mask: torch.Tensor
    positions: torch.Tensor


def _prefill(models: list, prompts: list[list[int]], pad: int) -> _State:
    from .evaluate import left_padded

    ids, mask, positions = left_padded(prompts, pad)
    caches, logprobs = [], []
    for model in models:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        caches.append(out.past_key_values)
        logprobs.append(out.logits[:, -1].float().log_softmax(-1))
    return _State(models, caches, logprobs, mask, positions)


def _likeliest(state: _State, replies: list[list[int]], mode: str) -> list[int]:
    """Per row, the reply with the highest fused log-likelihood; the caches are left as they were."""
    from .evaluate import _continue

    batch, totals = state.mask.shape[0], []
    for reply in replies:
        total = fuse(state.logprobs[0], state.logprobs[1], state.logprobs[2:], mode)[:, reply[0]]
        if len(reply) > 1:
            tokens = torch.tensor(reply[:-1]).expand(batch, -1)
            steps = [_continue(m, copy.deepcopy(c), tokens, state.mask, state.positions)[0]
                     for m, c in zip(state.models, state.caches)]
            for k, token in enumerate(reply[1:]):
                total = total + fuse(steps[0][:, k], steps[1][:, k], [s[:, k] for s in steps[2:]], mode)[:, token]
        totals.append(total)
    return torch.stack(totals, 1).argmax(1).tolist()


def _greedy(state: _State, max_new: int, eos: int, mode: str, trace: FusionTrace | None) -> list[list[int]]:
    from .evaluate import _continue, up_to_eos

    logprobs, mask, positions = list(state.logprobs), state.mask, state.positions
    tokens, done = [], torch.zeros(mask.shape[0], dtype=torch.bool)
    while True:
        token = fuse(logprobs[0], logprobs[1], logprobs[2:], mode, trace).argmax(-1)
        tokens.append(token)
        done |= token == eos
        if len(tokens) == max_new or bool(done.all()):
            break
        for i, (model, cache) in enumerate(zip(state.models, state.caches)):
            step, step_mask, step_positions = _continue(model, cache, token[:, None], mask, positions)
            logprobs[i] = step[:, -1]
        mask, positions = step_mask, step_positions
    return up_to_eos(torch.stack(tokens, 1).tolist(), eos)
