"""Why checkpoints of one model share no tensor names: one saved as the bare body (AutoModel's BertModel:
`encoder.layer.0.…`), the other in a class that wraps it (BertForSequenceClassification: `bert.encoder.layer.0.…`).

The merge matches tensors by name, so the planner reports every tensor missing and offers the rules for tensors some
models lack (copy the base's, merge those present), which here would write the base back unchanged. When a plan
fails on checkpoints like these, this names the prefix and the real fix instead.
"""
from __future__ import annotations

from collections import Counter

from ..errors import CheckpointError, IncompatibleInputsError
from ..io.checkpoint import Checkpoint
from ..spec.model import MergeSpec

SHARE = 0.5  # of the smaller checkpoint's tensors: at most this many shared as they are, at least this many wrapped


def explain_wrapped_names(spec: MergeSpec, error: IncompatibleInputsError) -> None:
    """Raise a clearer IncompatibleInputsError, from `error`, if a checkpoint's names are the first one's (the base,
    or the first model) under a prefix or the reverse; else return (the caller re-raises `error`)."""
    refs = ([("base", spec.base)] if spec.base else []) + [("model", m.path) for m in spec.models]
    try:
        opened = [(kind, ref, Checkpoint.open(ref)) for kind, ref in refs]
    except CheckpointError:
        return
    first_kind, first_ref, first = opened[0]
    for kind, ref, ckpt in opened[1:]:
        found = wrapping(_names(first), _names(ckpt))
        if found is None:
            continue
        prefix, outer_is_second = found
        wrapper, bare = ((f"{kind} {ref!r}", ckpt), (f"{first_kind} {first_ref!r}", first)) if outer_is_second else \
            ((f"{first_kind} {first_ref!r}", first), (f"{kind} {ref!r}", ckpt))
        wrapped_name = next(n for n in sorted(_names(wrapper[1])) if n.startswith(f"{prefix}."))
        cls = ((wrapper[1].config or {}).get("architectures") or ["the wrapping class"])[0]
        raise IncompatibleInputsError(
            f"{wrapper[0]} names its tensors under `{prefix}.` (e.g. {wrapped_name}) where {bare[0]} names them "
            f"without it (e.g. {wrapped_name[len(prefix) + 1:]}): one is saved as the bare body, the other in a class "
            f"that wraps it ({cls}). Tensors are matched by name, so none match, and the rules for missing tensors "
            f"would write the base back unchanged. Fix: load the bare checkpoint with the wrapping class (e.g. "
            f"{cls}.from_pretrained(BARE), or AutoModelForMaskedLM for a base) and save_pretrained it, then name that "
            f"folder in the spec.") from error


def wrapping(first: set[str], second: set[str]) -> tuple[str, bool] | None:
    """(prefix, whether `second` is the wrapping one) when one set's names are the other's under one prefix, for
    most of the wrapped set, and few names are shared as they are; else None."""
    if len(first & second) > SHARE * min(len(first), len(second)):
        return None
    for outer, inner, outer_is_second in ((second, first, True), (first, second, False)):
        prefixes = Counter(n.split(".", 1)[0] for n in outer if "." in n and n.split(".", 1)[1] in inner)
        if prefixes:
            prefix, count = prefixes.most_common(1)[0]
            if count >= SHARE * len(inner):
                return prefix, outer_is_second
    return None


def _names(ckpt: Checkpoint) -> set[str]:
    return {n for n, meta in ckpt.tensors.items() if meta.dtype.is_floating_point}
