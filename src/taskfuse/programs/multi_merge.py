"""Multi-stage merges: one YAML file of several merges separated by `---` (mergekit-multi's format), taskfuse specs or
mergekit configs, where a stage gives its output a `name:` and later stages use that name as a model.

The stages run in an order where every stage comes after the ones it uses. The final stage, the one without a name
(or, where every stage is named, the one no other stage uses), is written to the output folder; the others are
intermediates. Without an intermediate folder they are built in a hidden staging folder beside the output, which is
removed when the run ends, however it ends (and by a later run, if the process was killed). With one, each stage is
kept there under its name, and a later run reuses a stage whose recorded spec is the one it would merge and whose
inputs were reused too, so that editing the last stage does not merge the first ones again; a stage whose spec
changed is merged again, and so is every stage after it that uses it.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import SpecError
from ..io.output import check_output_dir, remove_stale_stages
from ..spec.load import read_documents, spec_from_document
from ..spec.model import MergeSpec

# where a document names a model: taskfuse's keys and mergekit's
MODEL_KEYS = ("base", "config_from", "tokenizer_from", "base_model", "tokenizer_source")
LIST_KEYS = ("models", "slices")  # lists of mappings whose `path` or `model` (or sources' `model`) names a model


@dataclass(frozen=True)
class Stage:
    name: str | None
    document: dict


def read_stages(path: Path) -> list[Stage]:
    """The file's merges, each with its name (taken out of the document, which is then an ordinary spec)."""
    stages, problems = [], []
    for i, document in enumerate(read_documents(path)):
        if not isinstance(document, dict):
            problems.append(f"document {i + 1}: expected a merge (a mapping), got {type(document).__name__}")
            continue
        name = document.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name):
            problems.append(f"document {i + 1}: name {name!r} should be a plain folder name")
        stages.append(Stage(name, {k: v for k, v in document.items() if k != "name"}))
    names = [s.name for s in stages if s.name is not None]
    problems += [f"name {n!r} is given to {names.count(n)} stages" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise SpecError(f"{path}: invalid multi-stage merge:\n" + "\n".join(f"  - {p}" for p in problems))
    return stages


def model_references(document: dict) -> list[str]:
    """Every string the document uses as a model (mergekit's `+adapter` suffix and slices' sources included)."""
    found: list[str] = []

    def record(ref: str) -> str:
        found.extend(ref.split("+"))
        return ref
    _map_references(document, record)
    return found


def with_paths(document: dict, paths: dict[str, str]) -> dict:
    """The document with every model reference that names a stage replaced by that stage's output folder."""
    return _map_references(document, lambda ref: "+".join(paths.get(part, part) for part in ref.split("+")))


def _map_references(document: dict, swap: Callable[[str], str]) -> dict:
    """The document with `swap` applied to every model reference: the keys of MODEL_KEYS, a tokenizer block's source,
    and the models and slices entries (with mergekit slices' sources), wherever they hold a string."""
    def entry(value):
        if not isinstance(value, dict):
            return value
        out = {k: swap(v) if k in ("path", "model") and isinstance(v, str) else v for k, v in value.items()}
        if isinstance(out.get("sources"), list):
            out["sources"] = [entry(s) for s in out["sources"]]
        return out
    out = {k: swap(v) if k in MODEL_KEYS and isinstance(v, str) else v for k, v in document.items()}
    tokenizer = out.get("tokenizer")
    if isinstance(tokenizer, dict) and isinstance(tokenizer.get("source"), str):
        out["tokenizer"] = {**tokenizer, "source": swap(tokenizer["source"])}
    for key in LIST_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [entry(e) for e in out[key]]
    return out


def ordered(stages: list[Stage], path: Path) -> list[Stage]:
    """The stages, each after the ones it uses, the final one last; a cycle or two final stages are refused."""
    names = {s.name for s in stages if s.name is not None}
    uses = {id(s): set(model_references(s.document)) & names for s in stages}
    used = set().union(*uses.values())
    finals = [s for s in stages if s.name is None] or [s for s in stages if s.name not in used]
    if not finals:
        raise SpecError(f"{path}: every stage is named and used by another, so the stages use each other in a cycle "
                        "and none is the final one. Fix: leave the name out of the final stage, which no other uses.")
    if len(finals) != 1:
        which = ", ".join(str(s.name) if s.name else "one unnamed" for s in finals) or "none"
        raise SpecError(f"{path}: a multi-stage merge has one final stage, the one without a `name:` (or the one no "
                        f"other stage uses); this file has {len(finals)} ({which}). Fix: leave the name out of the "
                        "final stage only, and name every other one.")
    final = finals[0]
    order, done, pending = [], set(), [s for s in stages if s is not final]
    while pending:
        ready = [s for s in pending if uses[id(s)] <= done]
        if not ready:
            waiting = ", ".join(f"{s.name} (uses {', '.join(sorted(uses[id(s)] - done))})" for s in pending)
            raise SpecError(f"{path}: the stages use each other in a cycle: {waiting}. Fix: each stage may use only "
                            "stages that do not use it.")
        order += ready
        done |= {s.name for s in ready}
        pending = [s for s in pending if s not in ready]
    if not uses[id(final)] <= done:
        raise SpecError(f"{path}: the final stage {final.name!r} uses itself. Fix: use only the other stages.")
    return order + [final]


@dataclass(frozen=True)
class StageRun:
    name: str | None
    folder: Path
    reused: bool


def reusable(folder: Path, spec: MergeSpec) -> bool:
    """Whether `folder` is a complete taskfuse merge of exactly `spec` (its recorded spec, read back)."""
    from ..io.output import written_kind
    recorded = folder / "taskfuse_spec.yaml"
    if written_kind(folder) != "merge" or not recorded.is_file():
        return False
    return yaml.safe_load(recorded.read_text(encoding="utf-8")) == spec.model_dump(mode="json")


def run_stages(path: str | Path, out: str | Path, intermediate_dir: str | Path | None = None,
               merge: Callable[[MergeSpec, Path], Any] | None = None,
               report: Callable[[int, int, Stage, bool], None] | None = None) -> list[StageRun]:
    """Merge every stage of the file `path` in order, the final one into `out`. `merge(spec, folder)` merges one
    stage (default: taskfuse.api.merge); `report(i, n, stage, reused)` is called before each."""
    from .. import api
    path, out = Path(path), Path(out)
    merge = merge or api.merge
    stages = ordered(read_stages(path), path)
    check_output_dir(out)  # refused before the first stage, not after the last
    keep = Path(intermediate_dir) if intermediate_dir is not None else None
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(parent / out.name)
    work = keep or parent / f".{out.name}.partial-stages-{os.getpid()}"  # removed by a later run if this one dies
    runs, paths, merged = [], {}, set()
    try:
        for i, stage in enumerate(stages):
            spec = spec_from_document(with_paths(stage.document, paths), path)
            folder = out if stage is stages[-1] else work / stage.name
            # a stage that uses one merged again in this run is merged again too: its spec names the same folder
            inputs_kept = not (set(model_references(stage.document)) & merged)
            reused = keep is not None and folder != out and inputs_kept and reusable(folder, spec)
            if report:
                report(i, len(stages), stage, reused)
            if not reused:
                merge(spec, folder)
                merged.add(stage.name)
            paths[stage.name] = str(folder.resolve())
            runs.append(StageRun(stage.name, folder, reused))
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return runs
