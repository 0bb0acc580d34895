"""Built-in tasks (real text from Debian packages) and users' task files, behind one `load_task`."""
from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches
from pathlib import Path

from ...errors import TaskDataError
from . import fortunes, genre, manpages, packages, wordnet
from .frozen import load_or_freeze
from .data import SPLITS, Sizes, Source, Split, Task, make_task
from .user import load_user_task

BUILTIN: dict[str, Callable[..., Task]] = {
    "wordnet_noun_topic": wordnet.noun_topic,
    "wordnet_domain": wordnet.usage_domain,
    "wordnet_pos": wordnet.part_of_speech,
    "fortune_topic": fortunes.topic,
    "fortune_language": fortunes.language,
    "manpage_section": manpages.section,
    "debian_section": packages.section,
    "text_genre": genre.genre,
}


def load_task(name_or_path: str | Path, seed: int = 0, sizes: Sizes | None = None) -> Task:
    """A built-in task by name, or a user's .jsonl/.csv task file by path."""
    key = str(name_or_path)
    if key in BUILTIN:
        builder = BUILTIN[key]
        return load_or_freeze(key, seed, sizes, lambda: builder(seed) if sizes is None else builder(seed, sizes))
    if key.endswith((".jsonl", ".json", ".csv")) or Path(key).exists():
        return load_user_task(key, seed, sizes or Sizes())
    close = get_close_matches(key, BUILTIN, n=3)
    raise TaskDataError(f"unknown task {key!r}; did you mean {close}? Built-in tasks: {sorted(BUILTIN)}, or give a "
                        f"path to a .jsonl/.csv file with text and label columns")


__all__ = ["BUILTIN", "SPLITS", "Sizes", "Source", "Split", "Task", "load_task", "load_user_task", "make_task"]
