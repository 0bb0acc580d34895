"""Where experts live: a user cache directory, one folder per expert named by the content hash of what made it."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import ZooError
from ..eval.tasks import Task
from ..io.cache_dir import cache_root
from .recipe import Recipe

ZOO_FORMAT = 1  # bump when training changes in a way the key does not capture


@lru_cache(maxsize=None)
def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def expert_key(task: Task, base_dir: Path, recipe: Recipe) -> str:
    """Hash of the data, the base weights, the recipe and the torch release: any change trains a new expert."""
    payload = {"format": ZOO_FORMAT, "task": task.fingerprint(), "base": file_digest(base_dir / "model.safetensors"),
               "recipe": recipe.as_dict(), "torch": torch.__version__.split("+")[0].rsplit(".", 1)[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Expert:
    """One task's expert on disk: `model/` (HF encoder), `lora/` (PEFT adapter), `head.safetensors`."""

    task: str
    path: Path

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def lora_dir(self) -> Path:
        return self.path / "lora"

    @property
    def info(self) -> dict:
        return json.loads((self.path / "expert.json").read_text())

    def head(self) -> torch.nn.Linear:
        tensors = load_file(self.path / "head.safetensors")
        head = torch.nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0])
        head.load_state_dict(tensors)
        return head.requires_grad_(False)


def expert_dir(task: Task, key: str) -> Path:
    return cache_root() / "experts" / f"{task.name}-{key[:16]}"


def find_expert(task: Task, key: str) -> Expert | None:
    path = expert_dir(task, key)
    return Expert(task.name, path) if (path / "expert.json").exists() else None


def require_expert(task: Task, key: str) -> Expert:
    found = find_expert(task, key)
    if found is None:
        raise ZooError(f"no expert for task {task.name!r} in {cache_root() / 'experts'} (key {key[:16]}); "
                       "build the zoo first: `taskfuse zoo` (or `taskfuse bench`, which builds it)")
    return found
