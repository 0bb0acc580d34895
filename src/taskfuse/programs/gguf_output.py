"""Merges and conversions written as a GGUF folder: `<out>/<out name>-<outtype>.gguf` beside a model card and the
spec, staged and renamed into place like every output (io/output.py).

A merge is first written by the streaming executor as a Hugging Face folder inside the staging folder, then
converted tensor by tensor; the GGUF writer needs every tensor's size before the first byte of data, which the
executor's order of work does not give it. That costs one extra write and read of the model, never more memory
than one tensor. A conversion of an existing checkpoint writes the GGUF directly from it.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from ..io.checkpoint import Checkpoint
from ..io.gguf_read import GGUFCheckpoint
from ..io.gguf_tokenizer import fields_from_folder, fields_from_gguf
from ..io.gguf_write import check_outtype, gguf_architecture, write_gguf
from ..io.output import check_free_space, check_output_dir, staged_output

Progress = Callable[[int, int, str], None]
CARRIED = ("README.md", "taskfuse_spec.yaml")  # the merge's own record, kept beside the GGUF


def gguf_name(out: Path, outtype: str) -> str:
    return f"{Path(out).name}-{outtype}.gguf"


def tokenizer_fields(model: Checkpoint, tokenizer_source: Checkpoint | None, folder: Path | None):
    """The tokenizer as GGUF fields: copied from a GGUF source, else built from a Hugging Face folder."""
    if isinstance(tokenizer_source, GGUFCheckpoint):
        return fields_from_gguf(tokenizer_source.reader)
    config = model.config or {}
    return fields_from_folder(folder or model.root, int(config.get("vocab_size", 0)), model.ref,
                              gguf_architecture(model, config))


def convert_to_gguf(source: str | Path, out: str | Path, outtype: str = "f16",
                    progress: Progress | None = None) -> dict:
    """Write the checkpoint `source` (safetensors folder, GGUF, PEFT adapter on its base) as a GGUF folder."""
    check_outtype(outtype)
    out = Path(out)
    check_output_dir(out, "gguf")
    model = Checkpoint.open(source)
    gguf_architecture(model, model.config or {})
    fields = tokenizer_fields(model, model, None)
    check_free_space(out, sum(m.nbytes for m in model.tensors.values()))
    with staged_output(out, "gguf") as stage:
        return write_gguf(model, stage / gguf_name(out, outtype), outtype, fields, out.name, progress)


def merge_to_gguf(spec, out: str | Path, outtype: str = "f16", *, device: str = "cpu", threads: int | None = None,
                  progress: Progress | None = None) -> dict:
    """Merge as `spec` says and write the result as a GGUF folder."""
    from .. import api
    from ..execute import execute

    check_outtype(outtype)
    out = Path(out)
    check_output_dir(out, "gguf")
    plan, checkpoints = api.prepare(spec, out)
    check_free_space(out, 2 * sum(j.nbytes for j in plan.jobs))  # the interim folder and the GGUF
    if plan.config_from is not None:  # refused before the merge, not after it
        gguf_architecture(checkpoints[plan.config_from], checkpoints[plan.config_from].config or {})
    source = plan.tokenizer_from if plan.tokenizer_from is not None else plan.config_from
    with staged_output(out, "gguf") as stage:
        interim = execute(plan, checkpoints, stage / "hf", device=device, threads=threads, progress=progress).out
        merged = Checkpoint.open(interim)
        fields = tokenizer_fields(merged, checkpoints[source] if source is not None else None, interim)
        summary = write_gguf(merged, stage / gguf_name(out, outtype), outtype, fields, out.name)
        for name in CARRIED:
            shutil.move(interim / name, stage / name)
        shutil.rmtree(interim)
    return summary
