"""Load a spec from YAML (ours or mergekit's), reporting every unknown key with a suggestion."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError, UnknownMethodError, collect
from ..methods.registry import suggest
from .model import MergeSpec


def unknown_keys(data: Any, model: type[BaseModel], where: str) -> list[str]:
    """Every key in `data` that `model` (recursively) does not define, with the closest valid key."""
    if not isinstance(data, dict):
        return []
    problems = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            problems.append(f"unknown key {where}{key!r}{suggest(str(key), list(model.model_fields))}")
            continue
        sub = _nested_model(field.annotation)
        if sub is not None:
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                at = f"{where}{key}[{i}]." if isinstance(value, list) else f"{where}{key}."
                problems += unknown_keys(item, sub, at)
    return problems


def unknown_methods(data: dict) -> list[str]:
    """Method names (top level and overrides) that are not registered, with the closest registered names."""
    from ..methods.registry import all_methods

    known = [m.name for m in all_methods()]
    overrides = data.get("overrides")
    names = [("method", data.get("method"))] + [
        (f"overrides[{i}].method", ov.get("method")) for i, ov in enumerate(overrides)
        if isinstance(ov, dict)] if isinstance(overrides, list) else [("method", data.get("method"))]
    return [f"{where}: unknown merge method {name!r}{suggest(str(name), known)}"
            for where, name in names if isinstance(name, str) and name not in known]


def _nested_model(annotation) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        for inner in (candidate, *getattr(candidate, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def parse_spec(data: Any, source: str = "spec") -> MergeSpec:
    """A MergeSpec from parsed YAML/dict; mergekit configs (they have `merge_method`) are translated first."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a mapping, got {type(data).__name__}")
    if "merge_method" in data:
        from .mergekit import translate_mergekit

        data = translate_mergekit(data, source)
    bad_keys, bad_methods = unknown_keys(data, MergeSpec, ""), unknown_methods(data)
    kind = UnknownMethodError if bad_methods and not bad_keys else SpecError
    collect(bad_keys + bad_methods, kind, f"{source}: invalid spec")
    try:
        return MergeSpec.model_validate(data)
    except ValidationError as e:
        errors = [f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors()]
        collect(errors, SpecError, f"{source}: invalid spec")
        raise  # unreachable: collect raised


def read_documents(path: str | Path) -> list[Any]:
    """The YAML documents of a spec file (one, or several for a multi-stage merge), with typed errors."""
    path = Path(path)
    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except OSError as e:
        raise SpecError(f"cannot read spec {path}: {e.strerror}. Fix: check the path.") from e
    except UnicodeDecodeError as e:
        raise SpecError(f"spec {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): is it "
                        "the right file? Fix: save the spec as UTF-8 YAML.") from e
    except yaml.YAMLError as e:
        raise SpecError(f"{path} is not valid YAML: {e}") from e


def load_spec(path: str | Path) -> MergeSpec:
    """Read and validate a YAML spec file. Relative model paths resolve against the spec's directory."""
    documents = read_documents(path)
    if len(documents) > 1:
        raise SpecError(f"{path} holds {len(documents)} merges separated by `---` (a multi-stage merge, "
                        "mergekit-multi's format): `taskfuse merge` runs them stage by stage, and this command takes "
                        "one spec. Fix: run `taskfuse merge`, or give this command one of the stages.")
    return spec_from_document(documents[0] if documents else None, Path(path))


def spec_from_document(data: Any, path: Path) -> MergeSpec:
    """A spec from one parsed YAML document of the file `path`, its relative model paths resolved against the
    file's folder (a multi-stage file holds several: programs/multi_merge.py)."""
    spec = parse_spec(data, str(path))
    return _resolve_paths(spec, Path(path).parent)


def _resolve_paths(spec: MergeSpec, root: Path) -> MergeSpec:
    def fix(p: str | None) -> str | None:
        if p is None or Path(p).is_absolute():
            return p
        if (root / p).exists():
            return str((root / p).resolve())
        if "+" in p:  # BASE+ADAPTER: each part where it is a folder beside the spec
            return "+".join(fix(part) for part in p.split("+", 1))
        return p  # a hub id, or a path the checkpoint reader refuses with its own error

    def fix_source(p: str | None) -> str | None:  # "base" and "union" are keywords here, not folders
        return p if p in ("base", "union") else fix(p)

    update = {
        "base": fix(spec.base),
        "models": [m.model_copy(update={"path": fix(m.path)}) for m in spec.models],
        "config_from": fix_source(spec.config_from),
        "tokenizer_from": fix_source(spec.tokenizer_from),
        "slices": [s.model_copy(update={"model": fix(s.model)}) for s in spec.slices] if spec.slices else None,
    }
    return spec.model_copy(update=update)
