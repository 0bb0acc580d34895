"""Training one expert: a full fine-tune and a LoRA fine-tune of the encoder under the task's frozen head."""
from __future__ import annotations

import math
from contextlib import contextmanager
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..eval.encoder import Encoded, sentence_embedding
from .recipe import Recipe

StepProgress = Callable[[int, int], None]


def fine_tune(encoder: nn.Module, head: nn.Linear, train: Encoded, recipe: Recipe, lr: float,
              progress: StepProgress | None = None) -> list[float]:
    """AdamW with linear warm-up and decay on the encoder's trainable parameters; the head stays frozen.
    Returns the loss of every step."""
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train.ids) / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    warm = max(1, int(total * recipe.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / (total - warm + 1))))
    order_rng = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)  # dropout
    encoder.train()
    losses = []
    for _ in range(recipe.epochs):
        order = torch.randperm(len(train.ids), generator=order_rng).tolist()
        for rows, ids, mask in train.batches(recipe.batch_size, order):
            loss = nn.functional.cross_entropy(head(sentence_embedding(encoder, ids, mask)), train.labels[rows])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if progress:
                progress(len(losses), total)
    encoder.eval()
    return losses


def prepare_full(encoder: nn.Module, recipe: Recipe) -> nn.Module:
    encoder.embeddings.word_embeddings.weight.requires_grad_(not recipe.freeze_word_embeddings)
    return encoder


def prepare_lora(encoder: nn.Module, recipe: Recipe) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    config = LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
                        target_modules=list(recipe.lora_targets))
    with peft_quietly():
        return get_peft_model(encoder, config)


@contextmanager
def peft_quietly():
    """peft reads a transformers attribute that transformers has deprecated; the warning is theirs, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
