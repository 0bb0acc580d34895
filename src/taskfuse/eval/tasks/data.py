"""A classification task: labelled texts, fixed splits, and where the text came from."""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass

from ...errors import TaskDataError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Source:
    """Provenance of a task's text: the Debian package (or file) it was read from."""

    package: str
    version: str
    licence: str


@dataclass(frozen=True)
class Sizes:
    """How a task is cut: caps keep the zoo within its time budget and bound class imbalance."""

    max_examples: int = 2000
    max_imbalance: float = 3.0  # largest class ≤ this × smallest kept class
    min_class: int = 20  # classes with fewer examples are dropped, not oversampled
    validation: float = 0.15
    test: float = 0.25


@dataclass(frozen=True)
class Split:
    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    kind: str  # what the task asks of the encoder: topic, language, genre, syntax...
    label_names: tuple[str, ...]
    splits: dict[str, Split]
    sources: tuple[Source, ...]
    seed: int
    # How a label reads as a sentence; the zero-shot head is the base encoder's embedding of each label's prompt.
    prompt: str = "{}"
    frozen_at: str | None = None  # UTC date a built-in task's data was frozen (tasks/frozen.py); not in the fingerprint

    def label_prompts(self) -> tuple[str, ...]:
        """"noun.animal" under "a word for {}" → "a word for animal"."""
        return tuple(self.prompt.format(n.rsplit(".", 1)[-1].replace("_", " ")) for n in self.label_names)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(label for s in self.splits.values() for label in s.labels)
        return {self.label_names[i]: counts[i] for i in range(self.num_labels)}

    def fingerprint(self) -> str:
        """Content hash of everything that determines what an expert learns from this task."""
        payload = {"name": self.name, "labels": self.label_names, "prompt": self.prompt,
                   "splits": {k: [s.texts, s.labels] for k, s in sorted(self.splits.items())}}
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def make_task(name: str, description: str, kind: str, examples: list[tuple[str, str]],
              sources: tuple[Source, ...], seed: int = 0, sizes: Sizes = Sizes(), prompt: str = "{}") -> Task:
    """Deduplicate, cap class imbalance and cut stratified train/validation/test splits fixed by `seed`."""
    by_class = _unique_by_class(examples)
    kept = {c: t for c, t in by_class.items() if len(t) >= sizes.min_class}
    if len(kept) < 2:
        raise TaskDataError(f"task {name!r}: fewer than two classes with ≥ {sizes.min_class} distinct texts "
                            f"({ {c: len(t) for c, t in by_class.items()} }); is its source package installed?")
    label_names = tuple(sorted(kept))
    per_class = min(min(len(t) for t in kept.values()) * sizes.max_imbalance, sizes.max_examples / len(kept))
    rng = random.Random(f"{name}:{seed}")  # string seeds hash with sha512: stable across runs and platforms
    parts: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in SPLITS}
    for label, cls in enumerate(label_names):
        texts = sorted(kept[cls])
        rng.shuffle(texts)
        texts = texts[: max(3, int(per_class))]
        n_test = max(1, math.floor(len(texts) * sizes.test))
        n_val = max(1, math.floor(len(texts) * sizes.validation))
        for split, chunk in (("test", texts[:n_test]), ("validation", texts[n_test:n_test + n_val]),
                             ("train", texts[n_test + n_val:])):
            parts[split][0].extend(chunk)
            parts[split][1].extend([label] * len(chunk))
    splits = {s: _shuffled(*parts[s], rng) for s in SPLITS}
    return Task(name, description, kind, label_names, splits, sources, seed, prompt)


def _unique_by_class(examples: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Group texts by label; a text seen under two labels is ambiguous and dropped from both."""
    labels_of: dict[str, set[str]] = {}
    for text, label in examples:
        text = " ".join(text.split())
        if text:
            labels_of.setdefault(text, set()).add(label)
    by_class: dict[str, set[str]] = {}
    for text, labels in labels_of.items():
        if len(labels) == 1:
            by_class.setdefault(next(iter(labels)), set()).add(text)
    return by_class


def _shuffled(texts: list[str], labels: list[int], rng: random.Random) -> Split:
    order = list(range(len(texts)))
    rng.shuffle(order)
    return Split(tuple(texts[i] for i in order), tuple(labels[i] for i in order))
