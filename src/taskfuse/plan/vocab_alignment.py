"""When the models' vocabularies differ, the planner sees every checkpoint through io/vocab.py's alignment: the
output's tokenizer first (a model's, or the union), then each model's embedding and LM-head rows matched to it by
token. Models whose vocabulary tensors all have the same rows merge row by index, as before, unless the spec asks
for the union or for padding."""
from __future__ import annotations

from ..errors import CheckpointError, IncompatibleInputsError
from ..io.transformers_model import load_tokenizer
from ..io.vocab import VocabAlignment, embedding_rows, is_vocab_tensor, output_vocabulary
from ..spec.model import MergeSpec


def needs_alignment(spec: MergeSpec, checkpoints: list) -> bool:
    if spec.tokenizer_from == "union" or spec.pad_vocab_to_multiple_of:
        return True
    rows = {embedding_rows(c) for c in checkpoints if any(is_vocab_tensor(n) for n in c.tensors)}
    return len(rows) > 1


def aligned_checkpoints(spec: MergeSpec, checkpoints: list) -> list:
    """The checkpoints as the merge should see them: aligned where needed, else as they are."""
    if not needs_alignment(spec, checkpoints):
        return checkpoints
    try:
        tokenizers = [load_tokenizer(c) for c in checkpoints]
    except CheckpointError as e:
        if spec.tokenizer_from == "union" or spec.pad_vocab_to_multiple_of:
            raise
        sizes = ", ".join(f"{c.ref!r} has {embedding_rows(c)} rows" for c in checkpoints)
        raise IncompatibleInputsError(f"vocabulary size mismatch in the token embeddings ({sizes}), and the rows "
                                      f"cannot be matched by token: {e}") from e
    source = tokenizer_source(spec, checkpoints)
    pad = spec.pad_vocab_to_multiple_of
    output = output_vocabulary(tokenizers, source, pad)
    if source != "union" and not pad:  # a model's tokenizer as it is: keep that model's padding too
        output.rows = max(output.rows, embedding_rows(checkpoints[source]))
    alignment = VocabAlignment(checkpoints, tokenizers, output, base=0 if spec.base else None)
    return [alignment.view(i) for i in range(len(checkpoints))]


def tokenizer_source(spec: MergeSpec, checkpoints: list) -> int | str:
    ref = spec.tokenizer_from or spec.config_from
    if ref == "union":
        return "union"
    if ref is None or ref == "base":
        return 0
    return next((i for i, c in enumerate(checkpoints) if c.ref == ref), 0)  # an unknown ref fails in the planner
