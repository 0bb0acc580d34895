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

from dataclasses import dataclass, field

import torch

from .decoding import Combine, greedy, prefill

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


def combination(mode: str, trace: FusionTrace | None = None) -> Combine:
    """The fusion as a step of llm/decoding: log-probabilities of (large, small, *experts) → fused ones."""
    return lambda logprobs: fuse(logprobs[0], logprobs[1], logprobs[2:], mode, trace)


@torch.inference_mode()
def fused_greedy(large, small, experts: list, prompts: list[list[int]], max_new: int, eos: int, pad: int,
                 mode: str = "dynamic", trace: FusionTrace | None = None) -> list[list[int]]:
    """Greedy replies to `prompts` (token ids) under the fused distribution; every model keeps its own cache."""
    return greedy(prefill([large, small, *experts], prompts, pad), max_new, eos, combination(mode, trace))


def evaluate_fused(large, small, experts: list, tok, task, split: str = "test", mode: str = "dynamic",
                   batch: int = 16):
    """The LLM benchmark's two scores for the fused model: exact match of its greedy reply, and the answer its
    fused distribution finds most likely (each reply token scored under the fusion applied at that step)."""
    from .evaluate import evaluate_combined

    return evaluate_combined([large, small, *experts], combination(mode), tok, task, split, batch)
