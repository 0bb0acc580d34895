"""A sentence-transformers model's own files, kept through a merge.

A sentence-transformers folder is a transformers checkpoint (the weights taskfuse merges) plus the modules that turn
its token states into an embedding: `modules.json` lists them (Pooling, Normalize, Dense...), each module's files
live in its own sub-folder, and a few root files configure the whole (`sentence_bert_config.json`: max sequence
length; `config_sentence_transformers.json`: prompts, similarity). Without them `SentenceTransformer(OUT)` silently
falls back to mean pooling with no normalisation and no Dense layer, so a merge of CLS-pooled models (BGE, E5...)
would embed differently from every model it came from.

The merge takes them from the model whose config it writes. A module with weights of its own (a Dense projection) is
not merged: it is copied only if every model that holds it holds the same weights, and refused otherwise, since
copying one model's projection onto a merged body would be silently wrong.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import IncompatibleInputsError

MODULES = "modules.json"
ROOT_FILES = ("modules.json", "config_sentence_transformers.json")
ROOT_CONFIG_PATTERN = "sentence_*_config.json"  # sentence_bert_config.json and its older per-architecture names
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class SentenceTransformersLayout:
    """What to copy from `root`: its root files and its module folders."""

    root: Path
    files: tuple[str, ...]
    folders: tuple[str, ...]

    def copy_to(self, dst: Path) -> list[str]:
        for name in self.files:
            shutil.copyfile(self.root / name, dst / name)
        for folder in self.folders:
            shutil.copytree(self.root / folder, dst / folder, dirs_exist_ok=True)
        return [*self.files, *self.folders]


def module_folders(root: Path) -> list[str]:
    """The sub-folders `modules.json` names that exist (the transformer itself is the root; Normalize may have
    none)."""
    try:
        modules = json.loads((root / MODULES).read_text())
    except (OSError, ValueError) as e:
        raise IncompatibleInputsError(f"{root / MODULES} cannot be read as sentence-transformers' module list ({e}). "
                                      "Fix: save the model again with SentenceTransformer.save.") from e
    paths = [str(m.get("path", "")) for m in modules if isinstance(m, dict)]
    return [p for p in paths if p and not Path(p).is_absolute() and ".." not in Path(p).parts and (root / p).is_dir()]


def sentence_transformers_layout(config_root: Path | None, model_roots: dict[str, Path]) -> SentenceTransformersLayout | None:
    """The layout to copy from `config_root`, checked against every model folder (by the name the user gave it)
    that is a sentence-transformers folder too; None when `config_root` is not one."""
    if config_root is None or not (config_root / MODULES).is_file():
        return None
    folders = module_folders(config_root)
    for ref, root in model_roots.items():
        if root != config_root and (root / MODULES).is_file():
            _check_same_modules(config_root, root, ref, folders)
    files = [n for n in ROOT_FILES if (config_root / n).is_file()]
    files += sorted(p.name for p in config_root.glob(ROOT_CONFIG_PATTERN) if p.is_file())
    return SentenceTransformersLayout(config_root, tuple(files), tuple(folders))


def _check_same_modules(config_root: Path, root: Path, ref: str, folders: list[str]) -> None:
    for folder in folders:
        if not (root / folder).is_dir():
            continue  # a model saved without this module: the merge takes the config model's
        for ours in sorted((config_root / folder).rglob("*")):
            theirs = root / folder / ours.relative_to(config_root / folder)
            if not ours.is_file() or not theirs.is_file():
                continue
            if ours.suffix in WEIGHT_SUFFIXES and _digest(ours) != _digest(theirs):
                raise IncompatibleInputsError(
                    f"model {ref}: its sentence-transformers module {folder}/ holds weights ({ours.name}) that differ "
                    f"from {config_root}'s, and taskfuse merges only the transformer's weights: copying one model's "
                    f"{folder} onto the merged body would be silently wrong. Fix: merge models whose {folder} is the "
                    "same (e.g. fine-tuned with it frozen), or drop the module from every model's modules.json.")
            if ours.suffix == ".json":
                _check_same_settings(ours, theirs, ref, f"{folder}/{ours.name}", config_root)


def _check_same_settings(ours: Path, theirs: Path, ref: str, name: str, config_root: Path) -> None:
    """A module's settings (e.g. Pooling's mode) must agree on every key both files hold: sentence-transformers
    versions add keys, which is no disagreement."""
    a, b = json.loads(ours.read_text()), json.loads(theirs.read_text())
    if not isinstance(a, dict) or not isinstance(b, dict):
        return
    differing = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    if differing:
        k = differing[0]
        raise IncompatibleInputsError(
            f"model {ref}: its sentence-transformers {name} sets {k}={b[k]!r} where {config_root}'s has "
            f"{a[k]!r}: the models embed differently, and the merge would keep only one way. Fix: merge models "
            "saved with the same modules, or make this one's setting the base's.")


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
