"""Hugging Face tensor names ↔ GGUF tensor names, by the `gguf` package's own per-architecture tables."""
from __future__ import annotations

from collections.abc import Iterable


def gguf_names(arch: str, layers: int, hf_names: Iterable[str]) -> dict[str, str]:
    """Hugging Face name -> GGUF name for every name the table knows (`model.layers.3.self_attn.q_proj.weight` ->
    `blk.3.attn_q.weight`); names it does not know are left out. One table for the whole model: transformers'
    get_gguf_hf_weights_map rebuilds it for every submodule, 13 s for a 30-layer model here."""
    import gguf

    enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    table = gguf.get_tensor_name_map(enum, layers)
    names = {}
    for hf in hf_names:
        stem, _, suffix = hf.rpartition(".")
        gname = table.get_name(stem)
        if gname is not None:
            names[hf] = f"{gname}.{suffix}"
    return names
