"""An embedding model's task data for learning merge coefficients: a JSONL of pairs or of labelled texts.

- {"text", "positive"} per line: a text and the text it should embed closest to (a query and its passage, a
  sentence and its paraphrase), the pairs sentence-transformers' MultipleNegativesRankingLoss trains on; every other
  line's positive in a batch is a negative.
- {"text", "label"} per line: a text and its class, written as the text the class should be embedded as (e.g.
  "a sports headline"); the task's every label is a candidate, as in a zero-shot classifier.

A file is one or the other; both give, per text, which of a set of key texts is its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import TaskDataError
from ..io.jsonl import jsonl_records
from .few_shot import first_per_class

PAIRS, LABELS = "pairs", "labels"


@dataclass(frozen=True)
class EmbeddingExamples:
    path: str
    kind: str  # PAIRS or LABELS
    texts: tuple[str, ...]
    positives: tuple[str, ...] = ()  # PAIRS: each text's own
    labels: tuple[int, ...] = ()  # LABELS: each text's class, an index into label_names
    label_names: tuple[str, ...] = ()  # LABELS: in order of first appearance

    def describe(self, max_tokens: int) -> dict:
        return {"file": self.path, "examples": len(self.texts), "kind": self.kind, "labels": True,
                "max_tokens": max_tokens, **({"classes": len(self.label_names)} if self.kind == LABELS else {})}

    def first_per_class(self, k: int) -> "EmbeddingExamples":
        """The first `k` texts of each class, in file order (aTLAS few-shot, Self Positioning's probe set); pairs
        have no classes: the file is the probe set, kept whole."""
        if self.kind == PAIRS:
            return self
        rows = first_per_class(self.labels, k)
        return EmbeddingExamples(self.path, LABELS, tuple(self.texts[i] for i in rows), (),
                                 tuple(self.labels[i] for i in rows), self.label_names)


def read_embedding_examples(path: str | Path, owner: str) -> EmbeddingExamples:
    """The file's pairs or labelled texts for the embedding model `owner`; a typed error names any bad line."""
    path = Path(path)
    records = jsonl_records(path, "task data")
    first = records[0][1]
    kind = PAIRS if isinstance(first, dict) and "positive" in first else LABELS
    key = "positive" if kind == PAIRS else "label"
    texts, keys = [], []
    for n, record in records:
        if not (isinstance(record, dict) and isinstance(record.get("text"), str) and isinstance(record.get(key), str)):
            kinds = '{"text", "positive"} pairs or {"text", "label"} classes (strings), one kind per file'
            where = ("" if n == records[0][0] else
                     f' (the file\'s first line is a {{"text", "{key}"}} line, so every line must be)')
            raise TaskDataError(f"{path}:{n}: learning over embedding model {owner} takes {kinds}{where}. Fix: give "
                                f"this line its text and its {key}.")
        texts.append(record["text"])
        keys.append(record[key])
    if kind == PAIRS:
        if len(texts) < 2:
            raise TaskDataError(f"{path}: one pair gives no negatives (the other pairs' positives are). Fix: give "
                                "at least 2 pairs; a batch holds 16.")
        return EmbeddingExamples(str(path), PAIRS, tuple(texts), tuple(keys))
    names = tuple(dict.fromkeys(keys))
    if len(names) < 2:
        raise TaskDataError(f"{path}: every line has label {names[0]!r}: one class gives nothing to tell apart. Fix: "
                            "give texts of at least 2 classes.")
    index = {name: i for i, name in enumerate(names)}
    return EmbeddingExamples(str(path), LABELS, tuple(texts), (), tuple(index[k] for k in keys), names)
