"""Scoring encoders on tasks with per-task heads; normalised accuracy against each task's expert."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .encoder import Encoded, embed_all, encode, load_encoder, load_tokenizer
from .metrics import accuracy, macro_f1
from .tasks import Task


@dataclass(frozen=True)
class Score:
    accuracy: float
    macro_f1: float
    examples: int


class Evaluator:
    """Tokenises each task's split once; scores any number of encoders against the same heads."""

    def __init__(self, tasks: dict[str, Task], heads: dict[str, nn.Linear], split: str, tokenizer=None):
        missing = sorted(set(tasks) - set(heads))
        if missing:
            raise ValueError(f"no head for task(s) {missing}")
        tokenizer = tokenizer or load_tokenizer()
        self.split = split
        self.tasks = tasks
        self.heads = heads
        self.data: dict[str, Encoded] = {
            name: encode(tokenizer, t.splits[split].texts, t.splits[split].labels) for name, t in tasks.items()}

    def score(self, encoder: nn.Module | str | Path) -> dict[str, Score]:
        """Per-task accuracy and macro-F1 of one encoder under the shared heads."""
        model = load_encoder(encoder) if isinstance(encoder, (str, Path)) else encoder.eval()
        return {name: self._score(model, name) for name in self.data}

    def score_task(self, encoder: nn.Module | str | Path, task: str) -> Score:
        """One task only: an expert is judged on its own task."""
        return self._score(load_encoder(encoder) if isinstance(encoder, (str, Path)) else encoder.eval(), task)

    @torch.no_grad()
    def _score(self, model: nn.Module, task: str) -> Score:
        data = self.data[task]
        predicted = self.heads[task](embed_all(model, data)).argmax(-1)
        return Score(accuracy(predicted, data.labels), macro_f1(predicted, data.labels, self.tasks[task].num_labels),
                     len(data.ids))


def normalized(scores: dict[str, Score], experts: dict[str, Score]) -> dict[str, float]:
    """Accuracy of a model on each task divided by that task's expert's accuracy."""
    return {t: s.accuracy / experts[t].accuracy if experts[t].accuracy else float("nan") for t, s in scores.items()}


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def as_dict(scores: dict[str, Score]) -> dict[str, dict]:
    return {t: asdict(s) for t, s in scores.items()}
