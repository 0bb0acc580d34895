"""The LLM benchmark's base model as the GGUF reader converts it: the sha256 of each file of the converted folder.

The LLM results (bench-llm, bench-llm-routing, llm-new-task) read one GGUF, SmolLM2's, converted once into a cached
folder that every later step reads; they depend on the GGUF reader only through that folder's bytes. This record,
made at a commit whose reader is the one those results ran, lets tests/test_readme.py guard them by the conversion's
output (a test converts again and compares) instead of by the reader's source: a reader change that converts
SmolLM2 to the same bytes cannot move their numbers.

    python benchmarks/llm_base_digest.py    # writes benchmarks/results/llm-base/result.json
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "llm-base"
# taskfuse's own records in a merge's output (model card, resolved spec, output marker, the base's provenance):
# they name paths and versions, not the model, so the digest leaves them out
BOOKKEEPING = {"README.md", "taskfuse_spec.yaml", ".taskfuse-output.json", "taskfuse_base.json"}


def converted_base(cache: Path) -> tuple[Path, dict[str, str]]:
    """The base converted as the LLM benchmark converts it, into the empty cache `cache`, and the sha256 of every
    file that holds the model (weights, config, tokenizer, chat template)."""
    from taskfuse.llm import base
    from taskfuse.zoo.store import file_digest

    before = os.environ.get("TASKFUSE_CACHE")
    os.environ["TASKFUSE_CACHE"] = str(cache)  # an empty cache: the conversion itself, not an earlier one
    try:
        folder = base.base_model_dir()
    finally:
        if before is None:
            del os.environ["TASKFUSE_CACHE"]
        else:
            os.environ["TASKFUSE_CACHE"] = before
    return folder, {path.name: file_digest(path) for path in sorted(folder.iterdir())
                    if path.is_file() and path.name not in BOOKKEEPING}


def main() -> None:
    from taskfuse.bench.provenance import code_commit, command_line, write_result

    with tempfile.TemporaryDirectory() as cache:
        folder, digests = converted_base(Path(cache))
        result = {"command": command_line(), "code": code_commit(), "converted": folder.name, "sha256": digests}
    write_result(OUT, result)  # whole or not at all
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
