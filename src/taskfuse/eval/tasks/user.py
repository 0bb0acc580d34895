"""A user's own task: a JSONL or CSV file with text and label columns and an optional split column."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from ...errors import TaskDataError
from .data import SPLITS, Sizes, Source, Split, Task, make_task

SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise TaskDataError(f"task file {path} does not exist; give a .jsonl or .csv file with text and label columns")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TaskDataError(f"{path}:{n}: not a JSON object ({e.msg}); write one object per line") from e
        return rows
    raise TaskDataError(f"task file {path}: unknown format {path.suffix!r}; use .jsonl or .csv")


def load_user_task(path: str | Path, seed: int = 0, sizes: Sizes = Sizes(), text: str = "text",
                   label: str = "label", split: str = "split") -> Task:
    """Rows with a split column keep their split; otherwise splits are cut like the built-in tasks'."""
    path = Path(path)
    rows = _rows(path)
    bad = [n for n, r in enumerate(rows, 1) if not isinstance(r, dict) or not str(r.get(text) or "").strip()
           or str(r.get(label) if r.get(label) is not None else "") == ""]
    if bad:
        raise TaskDataError(f"{path}: rows {bad[:5]}{'...' if len(bad) > 5 else ''} lack a {text!r} or {label!r} "
                            f"value; every row needs both (columns found: {sorted(rows[bad[0] - 1]) if isinstance(rows[bad[0] - 1], dict) else '?'})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    source = (Source(str(path), f"sha256:{digest}", "user-provided"),)
    name = path.stem
    if all(r.get(split) for r in rows):
        return _presplit(name, rows, text, label, split, source, seed, path)
    examples = [(str(r[text]), str(r[label])) for r in rows]
    return make_task(name, f"user task from {path.name}", "user", examples, source, seed, sizes)


def _presplit(name: str, rows: list[dict], text: str, label: str, split: str, source: tuple[Source, ...],
              seed: int, path: Path) -> Task:
    unknown = sorted({str(r[split]) for r in rows} - set(SPLIT_ALIASES))
    if unknown:
        raise TaskDataError(f"{path}: split values {unknown} are not train/validation/test")
    label_names = tuple(sorted({str(r[label]) for r in rows}))
    index = {n: i for i, n in enumerate(label_names)}
    parts = {s: ([], []) for s in SPLITS}
    for r in rows:
        texts, labels = parts[SPLIT_ALIASES[str(r[split])]]
        texts.append(" ".join(str(r[text]).split()))
        labels.append(index[str(r[label])])
    empty = [s for s in SPLITS if not parts[s][0]]
    if empty:
        raise TaskDataError(f"{path}: split(s) {empty} have no rows; give train, validation and test rows or "
                            f"drop the {split!r} column to have splits cut by seed")
    splits = {s: Split(tuple(t), tuple(y)) for s, (t, y) in parts.items()}
    return Task(name, f"user task from {path.name}", "user", label_names, splits, source, seed)
