"""Lazy, header-first access to Hugging Face checkpoints: safetensors (single or sharded) and pytorch_model.bin."""
from __future__ import annotations

import json
import math
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from .hub import resolve_hub_id
from .safetensors_pread import PreadSafetensors

SAFE_INDEX, SAFE_SINGLE = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str  # path of the file holding it, relative to the checkpoint root

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Checkpoint:
    """A model checkpoint whose tensor names, shapes and dtypes are known without reading tensor data."""

    def __init__(self, ref: str, root: Path, tensors: dict[str, TensorMeta], config: dict | None = None):
        self.ref, self.root, self.tensors = ref, root, tensors
        self.config = config  # config.json, parsed when the checkpoint is opened; None if it has none
        self._handles: dict[str, object] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Checkpoint({self.ref!r}, {len(self.tensors)} tensors)"

    @classmethod
    def open(cls, ref: str | Path, base_dir: Path | None = None) -> "Checkpoint":
        """Open a local directory or .safetensors file, or a hub id (downloaded through huggingface_hub)."""
        from .adapter import is_adapter_dir  # these build on this module
        from .classifier_adapter import open_adapter
        from .gguf_read import GGUFCheckpoint, is_gguf_file

        ref = str(ref)
        path = _local(ref, base_dir)
        if not path.exists() and "+" in ref:  # BASE+ADAPTER, mergekit's spelling of "this adapter on that base"
            base_ref, adapter_ref = ref.split("+", 1)
            adapter = _local(adapter_ref, base_dir)
            adapter = adapter if adapter.exists() else _fetch(adapter_ref, adapter)
            if not is_adapter_dir(adapter):
                raise CheckpointError(f"model {ref!r}: {adapter_ref!r} is not a PEFT adapter directory (no "
                                      "adapter_config.json). Fix: BASE+ADAPTER names a base and a LoRA adapter.")
            return open_adapter(ref, adapter, base_ref, base_dir)
        if not path.exists():
            path = _fetch(ref, path)
        if is_adapter_dir(path):
            return open_adapter(ref, path, base_dir=base_dir)
        if is_gguf_file(path):
            return GGUFCheckpoint.open(ref, path)
        if path.is_file():
            return cls(ref, path.parent, _read_safetensors_headers(ref, path.parent, [path.name]))
        return cls(ref, path, _scan_directory(ref, path), _read_config(ref, path))

    def meta(self, name: str) -> TensorMeta:
        return self.tensors[name]

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor's data in its stored dtype, written into `out` when given (same shape and dtype)."""
        meta = self.tensors[name]
        try:
            if meta.file.endswith(".safetensors"):
                return self._handle(meta.file, _open_pread).get_tensor(name, meta.dtype, meta.shape, out)
            t = self._handle(meta.file, _load_bin)[name]
            return t if out is None else out.copy_(t)
        except CheckpointError:
            raise
        except Exception as e:  # the data region can be damaged even when the header parsed
            raise CheckpointError(
                f"model {self.ref!r}: cannot read tensor {name!r} from {meta.file}: {e}. "
                "Fix: re-download or re-save this checkpoint."
            ) from e

    def map(self, name: str) -> torch.Tensor | None:
        """The tensor mapped from the page cache without a copy (read-only use; private, so writes never reach
        the file), or None where that is not possible (.bin files, older kernels): use read() then."""
        meta = self.tensors[name]
        if not meta.file.endswith(".safetensors"):
            return None
        try:
            return self._handle(meta.file, _open_pread).map_tensor(name, meta.dtype, meta.shape)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"model {self.ref!r}: cannot map tensor {name!r} from {meta.file}: {e}. "
                "Fix: re-download or re-save this checkpoint."
            ) from e

    def _handle(self, file: str, opener):
        with self._lock:
            if file not in self._handles:
                self._handles[file] = opener(self.ref, self.root / file)
            return self._handles[file]


def _local(ref: str, base_dir: Path | None) -> Path:
    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    return path


def _fetch(ref: str, path: Path) -> Path:
    if HUB_ID.match(ref) and not ref.startswith((".", "/")):
        return resolve_hub_id(ref)
    raise CheckpointError(f"model {ref!r}: path {path} does not exist. Fix: check the path in the spec.")


def _read_config(ref: str, root: Path) -> dict | None:
    """config.json, checked while planning so that a damaged one fails before any work, not after the merge."""
    path = root / "config.json"
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"model {ref!r}: {path} is not valid JSON ({e}). Fix: restore the model's "
                              "config.json (re-download it, or save it again with transformers).") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"model {ref!r}: {path} holds a JSON {type(config).__name__}, not an object. Fix: "
                              "restore the model's config.json.")
    return config


def _open_safetensors(ref: str, path: Path):
    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise CheckpointError(f"model {ref!r}: shard {path.name} is missing from {path.parent}. "
                              "Fix: download the complete checkpoint.") from None
    except Exception as e:
        raise CheckpointError(f"model {ref!r}: {path.name} is not a valid safetensors file ({e}); it may be "
                              "truncated. Fix: re-download or re-save this checkpoint.") from e


def _open_pread(ref: str, path: Path) -> PreadSafetensors:
    _open_safetensors(ref, path)  # full validation by the safetensors library first
    return PreadSafetensors(path)


def _load_bin(ref: str, path: Path) -> dict:
    # weights_only=True: a .bin is a pickle, and we never execute code from a checkpoint.
    try:
        # mmap needs the zip format torch.save has written since 1.6; older (legacy pickle) files load into memory
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except FileNotFoundError:
        raise CheckpointError(f"model {ref!r}: {path.name} is missing from {path.parent}.") from None
    except Exception as e:
        raise CheckpointError(f"model {ref!r}: cannot load {path.name} with weights_only=True ({e}). "
                              "Fix: re-save it with torch.save(state_dict) or convert it to safetensors.") from e


def _read_safetensors_headers(ref: str, root: Path, files: list[str]) -> dict[str, TensorMeta]:
    tensors: dict[str, TensorMeta] = {}
    for file in files:
        handle = _open_safetensors(ref, root / file)
        for name in handle.keys():
            sl = handle.get_slice(name)
            dtype = _DTYPES.get(sl.get_dtype())
            if dtype is None:
                raise CheckpointError(f"model {ref!r}: tensor {name!r} has unsupported dtype {sl.get_dtype()}.")
            tensors[name] = TensorMeta(name, tuple(sl.get_shape()), dtype, file)
    return tensors


def _bin_headers(ref: str, root: Path, files: list[str]) -> dict[str, TensorMeta]:
    tensors: dict[str, TensorMeta] = {}
    for file in files:
        for name, t in _load_bin(ref, root / file).items():
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(f"model {ref!r}: entry {name!r} in {file} is not a tensor.")
            tensors[name] = TensorMeta(name, tuple(t.shape), t.dtype, file)
    return tensors


def _index_files(ref: str, root: Path, index: str) -> list[str]:
    try:
        weight_map = json.loads((root / index).read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"model {ref!r}: {index} is unreadable or has no weight_map ({e}).") from e
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not (root / f).exists()]
    if missing:
        raise CheckpointError(f"model {ref!r}: shard(s) {', '.join(missing)} listed in {index} are missing from "
                              f"{root}. Fix: download the complete checkpoint.")
    return files


def _scan_directory(ref: str, root: Path) -> dict[str, TensorMeta]:
    if (root / SAFE_INDEX).exists():
        return _read_safetensors_headers(ref, root, _index_files(ref, root, SAFE_INDEX))
    if (root / SAFE_SINGLE).exists():
        return _read_safetensors_headers(ref, root, [SAFE_SINGLE])
    if (root / BIN_INDEX).exists():
        return _bin_headers(ref, root, _index_files(ref, root, BIN_INDEX))
    if (root / BIN_SINGLE).exists():
        return _bin_headers(ref, root, [BIN_SINGLE])
    loose = sorted(p.name for p in root.glob("*.safetensors"))
    if loose:
        return _read_safetensors_headers(ref, root, loose)
    raise CheckpointError(f"model {ref!r}: no model.safetensors, safetensors index or pytorch_model.bin in {root}. "
                          f"Fix: {_where_the_weights_are(root)}")


def _where_the_weights_are(root: Path) -> str:
    """The fix for a folder without weights: an older sentence-transformers folder keeps its transformer in a
    module folder (0_Transformer/, named by modules.json), which taskfuse does not read as the model."""
    try:
        modules = json.loads((root / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    for module in modules if isinstance(modules, list) else []:
        if not isinstance(module, dict):
            continue
        folder = root / str(module.get("path", ""))
        holds_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
        if folder != root and str(module.get("type", "")).endswith(".Transformer") and holds_weights:
            return (f"this is a sentence-transformers folder in the older layout, its transformer in "
                    f"{folder.name}/. Load it and save it again in today's layout (SentenceTransformer(path)"
                    f".save(new_path), which keeps its pooling), or name {folder} to merge the transformer alone.")
    return "name the folder that holds the weights, or download the complete checkpoint."
