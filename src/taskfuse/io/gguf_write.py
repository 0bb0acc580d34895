"""Write a checkpoint as one GGUF file, streaming: every tensor's header first (sizes are known from the shapes),
then each tensor read, converted to GGUF's layout, quantized and written in turn, so memory holds one tensor.

The layout rules are the inverse of what the reader (io/gguf_read.py, through transformers) undoes: Hugging Face
names to GGUF names by the `gguf` package's own name tables, llama's q/k rows permuted into the interleaved rotary
order llama.cpp expects, Gemma's norms stored with their +1 offset. Metadata comes from transformers' GGUF → config
table read backwards. One-dimensional tensors (norms, biases) stay float32, as llama.cpp keeps them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import CheckpointError, UsageError
from .checkpoint import Checkpoint
from .gguf_names import gguf_names
from .gguf_read import gemma3_query_scalar, head_dim
from .gguf_rope import FREQS_TENSOR, UnsupportedRope, rope_rules
from .gguf_rope_encode import encode_rope
from .gguf_tokenizer import Field

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# transformers model_type -> GGUF architecture written (llama.cpp stores Mistral as llama)
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3"}
SKIPPED = ("rotary_emb.inv_freq",)  # recomputed from the config by every loader
NUMPY_TYPES = {"F32": np.float32, "F16": np.float16}  # GGUF types the writer takes as numpy arrays


def write_gguf(ckpt: Checkpoint, dst: Path, outtype: str, tokenizer: list[Field], name: str,
               progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Write `ckpt` (config and tensors) with `tokenizer`'s fields to the file `dst`; returns a summary."""
    import gguf

    check_outtype(outtype)
    config = ckpt.config or {}
    arch = gguf_architecture(ckpt, config)
    layout = _layout(ckpt, config, arch, outtype)
    rope_fields, divisors = encode_rope(config, arch, head_dim(config))  # checked by gguf_architecture already
    writer = gguf.GGUFWriter(dst, arch)
    _add_metadata(writer, config, arch, outtype, name)
    for key, value in rope_fields.items():
        {str: writer.add_string, float: writer.add_float32, int: writer.add_uint32}[type(value)](key, value)
    for f in tokenizer:
        writer.add_key_value(f.key, f.value, f.vtype, sub_type=f.sub_type)
    for gname, qtype, shape in layout.values():
        if qtype.name in NUMPY_TYPES:
            dtype = NUMPY_TYPES[qtype.name]
            writer.add_tensor_info(gname, shape, dtype, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        else:  # stored as bytes: BF16 and the block quantizations
            nbytes = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
            writer.add_tensor_info(gname, nbytes, np.uint8, int(np.prod(nbytes)), raw_dtype=qtype)
    if divisors is not None:  # Llama 3's rotary scaling, as llama.cpp reads it
        writer.add_tensor_info(FREQS_TENSOR, divisors.shape, np.float32,
                               divisors.nbytes)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (hf, (gname, qtype, _)) in enumerate(layout.items(), 1):
            values = _to_gguf_layout(ckpt.read(hf).float().numpy(), gname, config, arch)
            writer.write_tensor_data(gguf.quants.quantize(values, qtype))
            if progress:
                progress(done, len(layout), gname)
        if divisors is not None:
            writer.write_tensor_data(divisors)
    finally:
        writer.close()
    return {"architecture": arch, "outtype": outtype, "tensors": len(layout),
            "types": {t: sum(1 for _, q, _ in layout.values() if q.name == t)
                      for t in sorted({q.name for _, q, _ in layout.values()})}}


def check_outtype(outtype: str) -> None:
    if outtype not in OUTTYPES:
        raise UsageError(f"--outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}.")


def gguf_architecture(ckpt: Checkpoint, config: dict) -> str:
    """The GGUF architecture `ckpt` is written as; a typed error for models the writer cannot encode."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(f"model {ckpt.ref!r}: GGUF output supports model types {', '.join(ARCHITECTURES)}, "
                              f"not {model_type!r}. Fix: write safetensors (leave out --format gguf).")
    if model_type == "gemma3_text" and config.get("query_pre_attn_scalar", 256) != gemma3_query_scalar(config):
        raise CheckpointError(f"model {ckpt.ref!r}: its queries are scaled by query_pre_attn_scalar = "
                              f"{config.get('query_pre_attn_scalar', 256)}, but GGUF has no key for it and llama.cpp "
                              f"scales Gemma 3's by {gemma3_query_scalar(config)}. Fix: write safetensors (leave out "
                              "--format gguf).")
    try:
        encode_rope(config, ARCHITECTURES[model_type], head_dim(config))
    except UnsupportedRope as e:
        raise CheckpointError(f"model {ckpt.ref!r}: its rotary embedding cannot be written to GGUF ({e}); written "
                              "without it, llama.cpp and every GGUF reader would compute other outputs. Fix: write "
                              "safetensors (leave out --format gguf).") from e
    return ARCHITECTURES[model_type]


def _layout(ckpt: Checkpoint, config: dict, arch: str, outtype: str) -> dict:
    """Hugging Face name -> (GGUF name, GGUF type, shape) for every tensor written, in checkpoint order."""
    names = gguf_names(arch, int(config.get("num_hidden_layers", 0)), ckpt.tensors)
    tied = config.get("tie_word_embeddings", False)
    layout = {}
    for hf, meta in ckpt.tensors.items():
        if hf.endswith(SKIPPED) or (tied and hf == "lm_head.weight"):
            continue  # the reader infers tying from output.weight's absence
        if hf not in names:
            raise CheckpointError(f"model {ckpt.ref!r}: tensor {hf!r} has no GGUF name for architecture {arch!r}. "
                                  "Fix: write safetensors, or drop the tensor from the checkpoint.")
        layout[hf] = (names[hf], _tensor_type(meta.shape, outtype), meta.shape)
    return layout


def _tensor_type(shape: tuple[int, ...], outtype: str):
    import gguf

    Q = gguf.GGMLQuantizationType
    if len(shape) < 2 or outtype == "f32":
        return Q.F32
    if outtype == "q8_0":
        block = gguf.GGML_QUANT_SIZES[Q.Q8_0][0]
        return Q.Q8_0 if shape[-1] % block == 0 else Q.F16  # rows must be whole blocks
    return {"f16": Q.F16, "bf16": Q.BF16}[outtype]


def _to_gguf_layout(values: np.ndarray, gname: str, config: dict, arch: str) -> np.ndarray:
    if arch == "llama" and (".attn_q." in gname or ".attn_k." in gname):
        heads = config["num_attention_heads"] if ".attn_q." in gname else config.get("num_key_value_heads")
        return _interleave_rotary_halves(values, heads or config["num_attention_heads"])
    if arch == "gemma3" and gname.endswith("norm.weight"):
        return values + 1  # Gemma scales by (1 + weight); GGUF stores the factor itself
    return values


def _interleave_rotary_halves(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face llama rotates the two halves of each head's rows; llama.cpp rotates adjacent pairs. Reorder each
    head's rows from [first half | second half] to [h1[0], h2[0], h1[1], h2[1], ...]."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_metadata(writer, config: dict, arch: str, outtype: str, name: str) -> None:
    import gguf
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from .. import __version__

    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype])
    writer.add_string("general.source.taskfuse", __version__)
    # the global layers' base: transformers 5 keeps it inside rope_parameters (per layer type for Gemma 3)
    values = {**config, "head_dim": head_dim(config), "rope_theta": rope_rules(config)[0].get("rope_theta")}
    table = {**GGUF_CONFIG_MAPPING[arch], "attention.key_length": "head_dim", "attention.value_length": "head_dim"}
    for key, hf_key in table.items():  # llama.cpp reads the head width from key/value_length
        if key == "rope.dimension_count":
            hf_key = "head_dim"  # llama.cpp rotates this many dimensions of each head
        value = values.get(hf_key) if hf_key else None
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            writer.add_uint32(f"{arch}.{key}", value)
        elif isinstance(value, float):
            writer.add_float32(f"{arch}.{key}", value)
