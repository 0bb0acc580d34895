"""What composing a user's causal-LM LoRA library from text needs (`taskfuse route phatgoose|lorahub`): the base
as its causal-LM class, its tokenizer, and the text of programs/text_data.py as (ids, mask, labels) batches scored
by the LLM benchmark's reply loss (llm/zoo.py), so the routers learn as its experts did."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from .text_data import TextExamples, batches_in_order, language_model_batches


def causal_lm_loader(base: str) -> Callable[[], nn.Module]:
    """A loader of `base` as its causal-LM class, after checking it is one: the loss is next-token loss."""
    import transformers
    config = transformers.AutoConfig.from_pretrained(base)
    classes = [getattr(transformers, a, None) for a in (config.architectures or []) if a.endswith("ForCausalLM")]
    if not any(classes):
        raise UsageError(f"base {base} is a {', '.join(config.architectures or ['model without architectures'])}, "
                         "not a causal LM: composition here learns from next-token loss on text. Fix: give a causal "
                         "LM's base; encoder libraries are composed in `taskfuse bench --routing`.")
    cls = next(c for c in classes if c is not None)
    return lambda: cls.from_pretrained(base).float()


def tokenizer_of(base: str | Path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(base))


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def labelled(inputs: dict, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A text_data batch as (ids, mask, labels): labels are the scored next tokens, −100 elsewhere."""
    labels = torch.full_like(inputs["ids"], -100)
    labels[:, 1:][inputs["scored"]] = targets
    return inputs["ids"], inputs["mask"], labels


def endless_batches(examples: TextExamples, batch: int, seed: int, pad: int) -> Iterator:
    for inputs, targets in language_model_batches(examples, batch, seed, pad).batches():
        yield labelled(inputs, targets)


def all_batches(examples: TextExamples, batch: int, pad: int) -> list:
    return [labelled(inputs, targets) for inputs, targets in batches_in_order(examples, batch, pad)]


@torch.inference_mode()
def mean_loss(model: nn.Module, batches: list) -> float:
    """The loss over every labelled token of `batches`, each batch weighted by its labelled tokens."""
    from ..llm.routed import reply_answer_loss
    total = tokens = 0.0
    for ids, mask, labels in batches:
        n = float((labels[:, 1:] != -100).sum())
        total += float(reply_answer_loss(model, ids, mask, labels)) * n
        tokens += n
    return total / tokens


def watched_loss(losses: list[float], progress: Callable[[int, float], None] | None,
                 diverged: Callable[[float, int], str]) -> Callable:
    """The reply loss for a learning loop: each step's value recorded in `losses` and reported to `progress`; a
    value that is not finite stops the loop with a typed error, `diverged(value, step)`."""
    from ..llm.routed import reply_answer_loss

    def loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = reply_answer_loss(model, ids, mask, labels)
        if not torch.isfinite(value):
            raise UsageError(diverged(value.item(), len(losses) + 1))
        losses.append(round(value.item(), 4))
        if progress:
            progress(len(losses), losses[-1])
        return value
    return loss
