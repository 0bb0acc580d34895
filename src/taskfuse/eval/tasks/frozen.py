"""Built-in tasks are frozen the first time they are built, so the benchmark sees the same data on any day.

The builders read what Debian packages installed, and apt's index of package descriptions. A routine
`apt-get update` can delete that index, and a Debian point release rewrites descriptions: either would break the
benchmark or silently change its data, its experts' cache keys and its numbers. So the first build of a task (for
one seed and one set of sizes) is written to the cache with its provenance and a content fingerprint, and every
later load reads that file instead of the system. Delete the file (or the cache's `tasks/` folder) to rebuild
from what is installed now.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ...errors import TaskDataError
from ...io.cache_dir import cache_root
from .data import Sizes, Source, Split, Task

FROZEN_FORMAT = 1  # bump when a builder changes what it produces: frozen data of the old builders is then ignored


def frozen_path(name: str, seed: int, sizes: Sizes | None) -> Path:
    """Where a task is frozen; `sizes` None means the builder's own default sizes."""
    cut = asdict(sizes) if sizes is not None else "builder default"
    key = json.dumps({"format": FROZEN_FORMAT, "task": name, "seed": seed, "sizes": cut}, sort_keys=True)
    return cache_root() / "tasks" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def load_or_freeze(name: str, seed: int, sizes: Sizes | None, build: Callable[[], Task]) -> Task:
    """The frozen copy of a built-in task if there is one, else `build()` it and freeze the result."""
    path = frozen_path(name, seed, sizes)
    if path.exists():
        return read_frozen(path)
    task = build()
    frozen = Task(**{**task.__dict__, "frozen_at": time.strftime("%Y-%m-%d", time.gmtime())})
    _write_atomically(path, json.dumps(_as_json(frozen), ensure_ascii=False))
    return frozen


def _as_json(task: Task) -> dict:
    return {"format": FROZEN_FORMAT, "fingerprint": task.fingerprint(), "name": task.name,
            "description": task.description, "kind": task.kind, "label_names": list(task.label_names),
            "splits": {k: {"texts": list(s.texts), "labels": list(s.labels)} for k, s in task.splits.items()},
            "sources": [asdict(s) for s in task.sources], "seed": task.seed, "prompt": task.prompt,
            "frozen_at": task.frozen_at}


def read_frozen(path: Path) -> Task:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        task = Task(data["name"], data["description"], data["kind"], tuple(data["label_names"]),
                    {k: Split(tuple(s["texts"]), tuple(s["labels"])) for k, s in data["splits"].items()},
                    tuple(Source(**s) for s in data["sources"]), data["seed"], data["prompt"], data["frozen_at"])
        intact = task.fingerprint() == data["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TaskDataError(f"frozen task data {path} is unreadable ({type(e).__name__}: {e}). Fix: delete the file "
                            "to rebuild the task from the installed Debian packages.") from e
    if not intact:
        raise TaskDataError(f"frozen task data {path} does not match its fingerprint (edited or damaged). Fix: delete "
                            "the file to rebuild the task from the installed Debian packages.")
    return task


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with partial.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
