"""Vocabulary alignment: models whose tokenizers differ by added tokens, or whose embeddings are padded past their
tokenizer, merged row by token instead of row by index.

The output's tokenizer is built first: one model's as it is, or the union (the base's, then every token another
model has and it lacks, in the order the models list them, added with their special flag). Each model is then seen
through `AlignedCheckpoint`: its vocabulary-indexed tensors (token embeddings, the LM head) have one row per output
token, in the output's order, and every other tensor is the model's own.

A row a model lacks (a token its tokenizer has not, or a padding row) takes the documented fill, the same for every
model that lacks it:
- the base's row for that token, when a base has it; in delta space that model then adds nothing to the row, i.e. it
  is excluded from the merge there;
- otherwise the mean of the rows of the models that have the token (a token only one model added keeps that
  model's row whatever the method; in delta space it is the "base" the others do not move);
- otherwise (padding past every tokenizer) the base's row at the same index if it has one, else zeros.

Padding: the output has as many rows as its tokenizer has tokens, rounded up to `pad_to_multiple_of`.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import IncompatibleInputsError
from .checkpoint import TensorMeta

VOCAB_NAMES = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight", "output.weight")


def embedding_rows(ckpt) -> int:
    """How many rows the model's vocabulary-indexed tensors have (its embedding, padding included)."""
    for name, meta in ckpt.tensors.items():
        if is_vocab_tensor(name):
            return meta.shape[0]
    raise IncompatibleInputsError(f"model {ckpt.ref!r} has no token embedding (none of {', '.join(VOCAB_NAMES)}); "
                                  "vocabulary alignment needs one. Fix: align only causal or masked LMs.")


def is_vocab_tensor(name: str) -> bool:
    return name.endswith(VOCAB_NAMES)


@dataclass
class OutputVocabulary:
    tokenizer: object  # a transformers tokenizer: the output's, saved beside the merged weights
    tokens: list[str]  # output row -> token (rows past the tokenizer are padding)
    rows: int

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(str(folder))


def output_vocabulary(tokenizers: list, source: int | str, pad_to_multiple_of: int | None = None) -> OutputVocabulary:
    """The output's tokenizer: `tokenizers[source]` as is, or with source "union" the first one (the base, when
    there is one) plus every token the others add, in their order."""
    from tokenizers import AddedToken

    if source == "union":
        tokenizer = copy.deepcopy(tokenizers[0])
        have = set(tokenizer.get_vocab())
        for other in tokenizers[1:]:
            special = {str(t) for t in other.all_special_tokens}
            new = [t for t, _ in sorted(other.get_vocab().items(), key=lambda item: item[1]) if t not in have]
            for token in new:  # one at a time, so that ids follow the order the other model gave them
                if token in special:  # registered as special too: skipped when decoding, never split
                    tokenizer.add_special_tokens({"additional_special_tokens": [
                        AddedToken(token, special=True, normalized=False)]}, False)
                else:
                    tokenizer.add_tokens([AddedToken(token, normalized=False)])
            have.update(new)
    else:
        tokenizer = tokenizers[source]
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        if i >= len(tokens):
            raise IncompatibleInputsError(f"the output tokenizer's ids are not contiguous (token {token!r} has id {i} "
                                          f"of {len(vocab)}). Fix: take the tokenizer from another model.")
        tokens[i] = token
    rows = len(tokens)
    if pad_to_multiple_of:
        rows = -(-rows // pad_to_multiple_of) * pad_to_multiple_of
    return OutputVocabulary(tokenizer, tokens, rows)


def row_sources(tokenizer, model_rows: int, output: OutputVocabulary) -> torch.Tensor:
    """Per output row, the model's row holding the same token, or -1 where the model has none."""
    vocab = tokenizer.get_vocab()
    sources = torch.full((output.rows,), -1, dtype=torch.long)
    for i, token in enumerate(output.tokens):
        j = vocab.get(token, -1)
        sources[i] = j if j < model_rows else -1
    return sources


class VocabAlignment:
    """Every model's vocabulary-indexed tensors in the output's rows, with the fill rule for rows a model lacks.
    `base` is the index of the base among `checkpoints` (None when the merge has no base)."""

    def __init__(self, checkpoints: list, tokenizers: list, output: OutputVocabulary, base: int | None):
        self.checkpoints, self.output, self.base = checkpoints, output, base
        self.sources = [row_sources(t, embedding_rows(c), output) for c, t in zip(checkpoints, tokenizers)]
        self._fills: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()  # the executor reads tensors from several threads

    def view(self, index: int) -> "AlignedCheckpoint":
        return AlignedCheckpoint(self.checkpoints[index], self, index)

    def aligned(self, index: int, name: str) -> torch.Tensor:
        """Model `index`'s tensor `name` with one row per output token; rows it lacks take the fill."""
        own = self.checkpoints[index].read(name)
        sources = self.sources[index]
        have = sources >= 0
        out = self.fill(name).to(own.dtype).clone()
        out[have] = own[sources[have]]
        return out

    def fill(self, name: str) -> torch.Tensor:
        with self._lock:
            if name not in self._fills:
                self._fills[name] = self._make_fill(name)
            return self._fills[name]

    def _make_fill(self, name: str) -> torch.Tensor:
        holders = [i for i, c in enumerate(self.checkpoints) if name in c.tensors]
        first = self.checkpoints[holders[0]].meta(name)
        total = torch.zeros((self.output.rows, *first.shape[1:]), dtype=torch.float32)
        count = torch.zeros(self.output.rows)
        for i in holders:
            sources, own = self.sources[i], self.checkpoints[i].read(name).float()
            have = sources >= 0
            total[have] += own[sources[have]]
            count[have] += 1
        fill = total / count.clamp(min=1).view(-1, *[1] * (total.dim() - 1))
        if self.base is not None and name in self.checkpoints[self.base].tensors:
            base = self.checkpoints[self.base].read(name).float()
            sources = self.sources[self.base]
            has = sources >= 0
            fill[has] = base[sources[has]]
            padding = (count == 0) & ~has & (torch.arange(self.output.rows) < base.shape[0])
            fill[padding] = base[torch.arange(self.output.rows)[padding]]
        return fill


class AlignedCheckpoint:
    """A checkpoint seen through a VocabAlignment, behind Checkpoint's interface."""

    def __init__(self, inner, alignment: VocabAlignment, index: int):
        self.inner, self.alignment, self.index = inner, alignment, index
        self.ref, self.root = inner.ref, inner.root
        rows = alignment.output.rows
        self.config = None if inner.config is None else {**inner.config, "vocab_size": rows}
        self.tensors = {name: (TensorMeta(name, (rows, *meta.shape[1:]), meta.dtype, meta.file)
                               if is_vocab_tensor(name) else meta) for name, meta in inner.tensors.items()}

    def __repr__(self) -> str:
        return f"AlignedCheckpoint({self.ref!r}, {self.alignment.output.rows} rows)"

    def meta(self, name: str) -> TensorMeta:
        return self.tensors[name]

    def map(self, name: str) -> torch.Tensor | None:
        return None if is_vocab_tensor(name) else self.inner.map(name)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        if not is_vocab_tensor(name):
            return self.inner.read(name, out)
        tensor = self.alignment.aligned(self.index, name)
        return tensor if out is None else out.copy_(tensor)
