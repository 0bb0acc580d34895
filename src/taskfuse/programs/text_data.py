"""Per-task text for learning a causal LM's merge coefficients: JSONL files of {"text"} or {"prompt", "completion"}.

- cross-entropy (aTLAS): next-token loss on every token of "text", or on the completion's tokens only;
- entropy (AdaMerging): the mean entropy of the next-token distributions over the tokens of "prompt" (or "text"),
  with no completion or label read: the unlabeled surrogate the paper uses, carried over to language models.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import TaskDataError
from ..llm.decoding import returned_cache, shared_opening, with_cache
from .learn import TaskBatches

MAX_TOKENS = 256  # per example; longer texts are cut (recorded in the learned record)


@dataclass(frozen=True)
class TextExamples:
    path: str
    ids: tuple[tuple[int, ...], ...]  # prompt + completion token ids per example
    scored_from: tuple[int, ...]  # first position whose next token is scored (0: all; len(prompt): completion)

    def describe(self, labels: bool) -> dict:
        return {"file": self.path, "examples": len(self.ids), "labels": labels,
                "tokens": sum(len(i) for i in self.ids), "max_tokens": MAX_TOKENS}


def read_examples(path: str | Path, tokenizer, labelled: bool) -> TextExamples:
    """Tokenised examples of one task's JSONL file; a typed error names the file and line of any bad record."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskDataError(f"cannot read task data {path}: {e}. Fix: give a UTF-8 JSONL file.") from None
    ids, starts = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        prompt, completion = _fields(path, n, line, labelled)
        first = prompt_tokens(tokenizer, prompt)
        rest = tokenizer(completion, add_special_tokens=False)["input_ids"] if completion else []
        row = (first + rest)[:MAX_TOKENS]
        if len(row) < 2:
            raise TaskDataError(f"{path}:{n}: fewer than two tokens, so no next token to score. Fix: drop the line.")
        ids.append(tuple(row))
        # completion tokens only when there is a completion (and labels may be read); else every next token
        starts.append(min(len(first), len(row) - 1) - 1 if rest else 0)
    if not ids:
        raise TaskDataError(f"task data {path} has no examples. Fix: one JSON object per line.")
    return TextExamples(str(path), tuple(ids), tuple(starts))


def prompt_tokens(tok, text: str) -> list[int]:
    """A prompt's tokens with the tokenizer's special tokens, once: a chat template that writes the begin token
    itself ("<s>[INST] ...") would otherwise start with two, which the model never saw in training."""
    ids = tok(text, add_special_tokens=True).input_ids
    bos = tok.bos_token_id
    return ids[1:] if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos else ids


def _fields(path: Path, n: int, line: str, labelled: bool) -> tuple[str, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{path}:{n}: not JSON ({e.msg}). Fix: one JSON object per line.") from None
    if not isinstance(record, dict) or not isinstance(record.get("text", record.get("prompt")), str):
        raise TaskDataError(f"{path}:{n}: needs a string \"text\", or \"prompt\" (with \"completion\" for "
                            "cross-entropy). Fix: rewrite the line as {\"text\": ...}.")
    if "text" in record:
        return record["text"], ""
    completion = record.get("completion", "")
    if not isinstance(completion, str):
        raise TaskDataError(f"{path}:{n}: \"completion\" must be a string.")
    return record["prompt"], completion if labelled else ""


def language_model_batches(examples: TextExamples, batch_size: int, seed: int, pad_id: int) -> TaskBatches:
    """A task's endless stream of padded batches; the loss reads logits only at scored positions."""

    def stream() -> Iterator[tuple[dict, Tensor]]:
        g = torch.Generator().manual_seed(seed)
        while True:  # a new order every pass
            order = torch.randperm(len(examples.ids), generator=g).tolist()
            for start in range(0, len(order), batch_size):
                yield _batch([examples.ids[i] for i in order[start:start + batch_size]],
                             [examples.scored_from[i] for i in order[start:start + batch_size]], pad_id)

    return TaskBatches(nn.Identity(), stream, scored_logits)


def batches_in_order(examples: TextExamples, batch_size: int, pad_id: int) -> Iterator[tuple[dict, Tensor]]:
    """One pass over the examples in file order, padded as language_model_batches pads them."""
    for start in range(0, len(examples.ids), batch_size):
        yield _batch(list(examples.ids[start:start + batch_size]),
                     list(examples.scored_from[start:start + batch_size]), pad_id)


def _batch(rows: list[tuple[int, ...]], starts: list[int], pad_id: int) -> tuple[dict, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    scored = torch.zeros(len(rows), width - 1, dtype=torch.bool)  # position p predicts token p + 1
    for r, (row, start) in enumerate(zip(rows, starts)):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
        scored[r, start:len(row) - 1] = True
    targets = ids[:, 1:][scored]  # (N,) next tokens at the scored positions
    return {"ids": ids, "mask": mask, "scored": scored, "shared": _shared_opening(rows, starts)}, targets


def _shared_opening(rows: list[tuple[int, ...]], starts: list[int]) -> int:
    """How many leading tokens every row of a batch shares before the first scored position (a chat template and
    a task's question: about half the tokens of the LLM benchmark's prompts); 0 for a batch of one row."""
    if len(rows) < 2:
        return 0
    return min(shared_opening([list(r) for r in rows]), min(starts))


def scored_logits(model: Callable, inputs: dict) -> Tensor:
    """(N, V) next-token logits at the scored positions. The rows' shared opening runs once at batch size 1 and
    its key/value cache is repeated (gradients flow through the copies), and the output layer, a fifth of a small
    LM's compute at a 49k vocabulary, runs only at positions some row scores."""
    ids, scored, shared = inputs["ids"], inputs["scored"], inputs.get("shared", 0)
    past = None
    if shared:
        past = returned_cache(model(input_ids=ids[:1, :shared], use_cache=True, logits_to_keep=1))
        past.batch_repeat_interleave(ids.shape[0])
    keep = scored.any(0).nonzero().squeeze(1)  # positions (from the row start) whose next token some row scores
    logits = model(input_ids=ids[:, shared:], attention_mask=inputs["mask"], **with_cache(past),
                   use_cache=bool(shared), logits_to_keep=keep - shared).logits  # (B, len(keep), V)
    return logits[scored[:, keep]]
