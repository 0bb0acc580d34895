"""The LLM benchmark's tasks: the encoder benchmark's real Debian text (frozen, fingerprinted) asked as short
questions whose answer is exactly checkable (one word or phrase from a known set), plus a user's JSONL of
prompt/answer pairs.

Each task keeps the classification task it came from, so its data, splits and fingerprint are the encoder
benchmark's; only the wording of the question and of the answers is added here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import TaskDataError
from ..eval.tasks import Sizes, Task, load_task, load_user_task

# task -> (question, {label name: answer}); the question lists the answers so that the base model can try too
QUESTIONS = {
    "wordnet_pos": "Which part of speech is the word defined as \"{text}\"?",
    "fortune_language": "In which language is this saying written?\n\n{text}",
    "manpage_section": "Which kind of manual page has this NAME line?\n\n{text}",
    "debian_section": "In which Debian archive section is the package described here?\n\n{text}",
    "text_genre": "What kind of text is this?\n\n{text}",
    "wordnet_noun_topic": "Which category does the thing defined as \"{text}\" belong to?",
}
DEFAULT_TASKS = tuple(QUESTIONS)
USER_QUESTION = "{text}"
TEXT_CHARS = 200  # package descriptions run to 1,000 characters; the first 200 say what the package is
SIZES = Sizes(max_examples=800, validation=0.1, test=0.2)  # 480 train, 80 validation, 160 test at most


@dataclass(frozen=True)
class Example:
    prompt: str  # the user's message
    answer: int  # index into LLMTask.answers


@dataclass(frozen=True)
class LLMTask:
    name: str
    answers: tuple[str, ...]  # the exact strings a correct reply is, one per class
    splits: dict[str, tuple[Example, ...]]
    source_fingerprint: str  # the classification task's data fingerprint

    def fingerprint(self, splits: tuple[str, ...] | None = None) -> str:
        """Content hash of the task as asked (or of the named splits only)."""
        payload = {"name": self.name, "answers": self.answers, "data": self.source_fingerprint,
                   "prompts": {k: [(e.prompt, e.answer) for e in v] for k, v in sorted(self.splits.items())
                               if splits is None or k in splits}}
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def train_fingerprint(self) -> str:
        """What an expert learns from: the training split (evaluation limits do not retrain the zoo)."""
        return self.fingerprint(("train",))


def answer_text(label: str) -> str:
    """"noun.animal" -> "animal": the answer a person would give."""
    return label.rsplit(".", 1)[-1].replace("_", " ")


def as_question(task: Task, question: str, limits: dict[str, int] | None = None) -> LLMTask:
    answers = tuple(answer_text(n) for n in task.label_names)
    if len(set(answers)) != len(answers):
        raise TaskDataError(f"task {task.name!r}: two labels read the same as answers ({answers}); rename them")
    options = "Answer with one of: " + ", ".join(answers) + "."
    splits = {}
    for split, data in task.splits.items():
        pairs = list(zip(data.texts, data.labels))[: (limits or {}).get(split)]
        # the options first: with the chat template and the question's start they are the opening every prompt of
        # the task shares, which evaluation and training compute once per batch
        splits[split] = tuple(Example(f"{options}\n{question.format(text=_clip(text))}", label) for text, label in pairs)
    return LLMTask(task.name, answers, splits, task.fingerprint())


def _clip(text: str, limit: int = TEXT_CHARS) -> str:
    """At most `limit` characters, cut at a word: the prompt's length is what evaluation costs on a CPU."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def load_llm_task(name_or_path: str | Path, seed: int = 0, limits: dict[str, int] | None = None) -> LLMTask:
    """A built-in task by name, or a user's JSONL/CSV of prompt/answer pairs (optional split column)."""
    key = str(name_or_path)
    if key in QUESTIONS:
        return as_question(load_task(key, seed, SIZES), QUESTIONS[key], limits)
    if key.endswith((".jsonl", ".json", ".csv")) or Path(key).exists():
        return as_question(load_user_task(key, seed, SIZES, text="prompt", label="answer"), USER_QUESTION, limits)
    raise TaskDataError(f"unknown LLM task {key!r}. Built-in: {', '.join(QUESTIONS)}; or give a .jsonl/.csv file "
                        "with prompt and answer columns")
