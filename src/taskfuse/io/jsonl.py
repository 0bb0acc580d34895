"""A user's JSONL file of records, one per line, read with typed errors that name the file and the line."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import TaskDataError


def jsonl_records(path: str | Path, what: str) -> list[tuple[int, object]]:
    """(line number, value) of every non-blank line of the `what` file at `path` (e.g. "task data")."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskDataError(f"cannot read {what} {path}: {e}. Fix: give a UTF-8 JSONL file.") from None
    records = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path}:{n}: not JSON ({e.msg}). Fix: one JSON object per line.") from None
    if not records:
        raise TaskDataError(f"{what} {path} has no records. Fix: one JSON object per line.")
    return records
