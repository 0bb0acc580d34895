"""Labelled text for a sequence classifier's Fisher: a JSONL of {"text", "label"} per line.

A label is one of the names the model's config gives its classes (`id2label`, as `save_pretrained` writes it after
fine-tuning with named labels) or a class index. A label the head does not know is refused with the line, the
label and the head's labels, since the squared gradient of a wrong class's log-likelihood is no Fisher of the task.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import TaskDataError
from ..io.jsonl import jsonl_records

MAX_TOKENS = 256  # per text; longer texts are cut (recorded)
DEFAULT_CLASSES = 2  # PretrainedConfig's num_labels


@dataclass(frozen=True)
class LabelledTexts:
    path: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def describe(self, labels: bool) -> dict:
        return {"file": self.path, "examples": len(self.texts), "labels": labels, "max_tokens": MAX_TOKENS}


def head_labels(config: dict) -> list[str]:
    """The classifier's class names in index order (`LABEL_i` where the config names none)."""
    names = {int(i): str(n) for i, n in (config.get("id2label") or {}).items()}
    # neither given: transformers' default of two classes, which transformers 5 leaves out of config.json
    count = max(len(names), int(config.get("num_labels") or 0)) or DEFAULT_CLASSES
    return [names.get(i, f"LABEL_{i}") for i in range(count)]


def read_labelled_texts(path: str | Path, config: dict, owner: str, labelled: bool = True) -> LabelledTexts:
    """The file's texts and class indices for the classifier `owner`; a typed error names any bad line. Unless
    `labelled`, labels are neither needed nor read (every index 0): the Fisher then takes the model's own."""
    path, classes = Path(path), head_labels(config)
    index = {name: i for i, name in enumerate(classes)}
    needs = '{"text": ..., "label": ...}' if labelled else '{"text": ...}'
    texts, labels = [], []
    for n, record in jsonl_records(path, "task data"):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or (labelled and
                                                                                       "label" not in record):
            raise TaskDataError(f"{path}:{n}: a classifier's Fisher needs {needs} per line. Fix: give each line "
                                f"its text{' and its class' if labelled else ''}.")
        label = record.get("label") if labelled else 0
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
            labels.append(label)
        elif isinstance(label, str) and label in index:
            labels.append(index[label])
        else:
            raise TaskDataError(f"{path}:{n}: label {label!r} is not a class of {owner}'s head, whose classes are "
                                f"{classes[:12]}{' ...' if len(classes) > 12 else ''}. Fix: use one of these names "
                                f"or an index below {len(classes)} (the config's id2label).")
        texts.append(record["text"])
    return LabelledTexts(str(path), tuple(texts), tuple(labels))


def text_width(tokenizer, config: dict, max_tokens: int = MAX_TOKENS) -> int:
    """Tokens per text: `max_tokens`, or what the model can position (its config, its tokenizer) if that is fewer."""
    return min(max_tokens, tokenizer.model_max_length, config.get("max_position_embeddings") or max_tokens)


def classifier_items(data: LabelledTexts, tokenizer, size: int,
                     width: int = MAX_TOKENS) -> Iterator[tuple[dict, Tensor]]:
    """(inputs, labels) of `size` texts each, in file order, each cut to `width` tokens and padded to the longest
    of its item."""
    for start in range(0, len(data.texts), size):
        encoded = tokenizer(list(data.texts[start:start + size]), padding=True, truncation=True,
                            max_length=width, return_tensors="pt")
        yield ({"ids": encoded["input_ids"], "mask": encoded["attention_mask"]},
               torch.tensor(data.labels[start:start + size]))


def class_logits(model: nn.Module, inputs: dict) -> Tensor:
    """(N, C) logits of the classifier's head, one row per text."""
    return model(input_ids=inputs["ids"], attention_mask=inputs["mask"]).logits
