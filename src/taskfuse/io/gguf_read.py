"""A GGUF file (llama.cpp's format, often quantized) as a checkpoint: Hugging Face tensor names, shapes and config
from the file's metadata, each tensor dequantized only when the executor reads it.

The `gguf` package parses the file (memory-mapped, so an unread tensor costs nothing) and dequantizes; transformers
supplies the config table (GGUF_CONFIG_MAPPING), the model whose tensor names the `gguf` package's table maps
(built on the meta device) and the per-architecture fix-ups (`TENSOR_PROCESSORS`: llama's q/k row permutation, Gemma's
norm offset). Quantized tensors are presented as float32: the dequantized values (scale × quant + min) are exact
there and not always in half precision.
"""
from __future__ import annotations

import functools
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoint import Checkpoint, TensorMeta
from .gguf_header import GGUFHeader, StringArray, UnreadableHeader, read_header
from .gguf_names import gguf_names
from .gguf_rope import FREQS_TENSOR, UnsupportedRope, decode_rope

# Architectures (general.architecture) read, each tested through a file transformers reads the same way; MoE ones
# (experts stacked into one tensor) and the rest are refused until they are tested too.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
_NATIVE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# read as mapped; BF16 (numpy has no bfloat16) goes through the gguf package's conversion
_AS_STORED = {"F32": np.float32, "F16": np.float16}


def _gguf():
    try:
        import gguf
    except ImportError:
        raise CheckpointError("reading or writing GGUF files needs the `gguf` package. Fix: pip install "
                              "'taskfuse[llm]' (or pip install gguf).") from None
    return gguf


def is_gguf_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".gguf"


class GGUFCheckpoint(Checkpoint):
    """Tensors of a .gguf file under their Hugging Face names; `config` is the transformers config as a dict."""

    def __init__(self, ref: str, path: Path, tensors: dict[str, TensorMeta], config: dict, sources, fixer):
        super().__init__(ref, path.parent, tensors, config)
        self.path = path
        self._sources = sources  # Hugging Face name -> where its bytes lie (gguf_header.TensorInfo)
        self._mapped = None
        self._fixer = fixer  # transformers' TensorProcessor for this architecture
        self._read_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GGUFCheckpoint({self.ref!r}, {len(self.tensors)} tensors)"

    @classmethod
    def open(cls, ref: str, path: Path) -> "GGUFCheckpoint":
        gguf = _gguf()
        try:
            header = read_header(path)
        except UnreadableHeader as e:
            raise CheckpointError(f"model {ref!r}: {path.name} is a GGUF taskfuse does not read ({e}). Fix: convert "
                                  "it to a little-endian GGUF of version 2 or 3 (llama.cpp's gguf-py scripts), or "
                                  "use the model's safetensors checkpoint.") from e
        except Exception as e:  # truncated or not a GGUF: struct.error, ValueError, IndexError...
            raise CheckpointError(f"model {ref!r}: {path} is not a readable GGUF file ({type(e).__name__}: {e}); it "
                                  "may be truncated. Fix: download or convert it again.") from e
        arch = header.fields.get("general.architecture") or "?"
        if arch not in SUPPORTED_ARCHITECTURES:
            raise CheckpointError(f"model {ref!r}: {path.name} is a GGUF of architecture {arch!r}; taskfuse reads "
                                  f"{', '.join(SUPPORTED_ARCHITECTURES)}. Fix: use the model's safetensors checkpoint.")
        config, names = _config_and_names(ref, path, header, arch)
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

        fixer = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config)
        tensors, sources = {}, {}
        for t in header.tensors:
            if t.name not in names:
                continue  # e.g. rope_freqs: read into the config's rope_scaling, which transformers computes from
            kind = gguf.GGMLQuantizationType(t.type)
            if kind.name not in _NATIVE and kind not in gguf.quants._type_traits:
                raise CheckpointError(f"model {ref!r}: tensor {t.name!r} in {path.name} is stored as "
                                      f"{kind.name}, which the gguf package cannot dequantize. Fix: use a "
                                      "GGUF quantized as F32, F16, BF16, Q8_0, Q4_0/1, Q5_0/1 or a K-quant.")
            hf = names[t.name]
            tensors[hf] = TensorMeta(hf, tuple(reversed(t.dims)), _NATIVE.get(kind.name, torch.float32), path.name)
            sources[hf] = t
        return cls(ref, path, tensors, config, sources, fixer)

    @functools.cached_property
    def reader(self):
        """The `gguf` package's reader of the whole file, every metadata value parsed (a GGUF output's
        tokenizer fields come from it): not needed to merge, and 1.6 s for a 50k-token vocabulary."""
        return _reader_class()(self.path)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        meta, source = self.tensors[name], self._sources[name]
        try:
            raw = self._bytes()[source.start:source.start + source.size]
            kind = _gguf().GGMLQuantizationType(source.type)
            if kind.name in _AS_STORED:  # F32/F16: the mapped values themselves, no conversion
                values = raw.view(_AS_STORED[kind.name]).reshape(meta.shape)
            elif kind.name == "Q8_0":
                out = torch.empty(meta.shape, dtype=meta.dtype) if out is None else out
                if out.dtype == torch.float32 and out.is_contiguous():  # dequantized where the executor wants it
                    values = self._fixer.process(weights=_q8_0(raw, out).numpy(), name=source.name).weights
                    if not np.may_share_memory(values, out.numpy()):  # a new array: llama's permuted q/k rows
                        out.numpy()[...] = values
                    return out
                values = _q8_0(raw).reshape(meta.shape).numpy()
            else:
                values = _gguf().dequantize(raw, kind).reshape(meta.shape)
            values = self._fixer.process(weights=values, name=source.name).weights
            out = torch.empty(meta.shape, dtype=meta.dtype) if out is None else out
            if out.dtype in (torch.float32, torch.float16):
                out.numpy()[...] = values  # one copy, from the mapping (or the dequantized array) into place
            else:
                out.copy_(torch.from_numpy(np.asarray(values, dtype=np.float32)))
        except Exception as e:  # a data region cut short by truncation surfaces here
            raise CheckpointError(f"model {self.ref!r}: cannot read tensor {source.name!r} ({name}) from "
                                  f"{self.path.name}: {e}. Fix: download or convert the GGUF again.") from e
        return out

    def _bytes(self) -> np.ndarray:
        with self._read_lock:
            if self._mapped is None:  # a plain view: np.memmap's bookkeeping on every slice costs more than the read
                self._mapped = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
            return self._mapped

    def map(self, name: str) -> torch.Tensor | None:
        return None  # stored quantized or in GGUF's layout: there is nothing to map without a conversion

    def save_tokenizer(self, dst: Path) -> None:
        """The tokenizer the file's metadata describes, saved in Hugging Face's files (transformers builds it)."""
        # The fast-tokenizer class directly: AutoTokenizer first parses the whole file again to pick the class
        # (8.6 s instead of 0.8 s for SmolLM2's 49k-token vocabulary), and picks this one for every GGUF.
        from transformers import PreTrainedTokenizerFast

        try:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
            tokenizer.save_pretrained(dst)
        except Exception as e:
            raise CheckpointError(f"model {self.ref!r}: transformers cannot build a tokenizer from {self.path.name} "
                                  f"({e}). Fix: take the tokenizer from another model (tokenizer_from).") from e


def _reader_class():
    import gguf

    class PlainArrayReader(gguf.GGUFReader):
        """GGUFReader over a plain ndarray view of its memory map: slicing a np.memmap runs memmap's bookkeeping
        on every one of the ~10 slices per vocabulary string; a plain view of the same mapping skips it (SmolLM2's
        header: 1.6 s instead of 3.6 s). The data stays mapped, read only when touched."""

        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped):
            self._plain = mapped.view(np.ndarray)

    return PlainArrayReader


def _config_and_names(ref: str, path: Path, header: GGUFHeader, arch: str) -> tuple[dict, dict[str, str]]:
    """transformers' config for the file (as a dict), and the Hugging Face name of each GGUF tensor name."""
    values = _config_values(header, arch)
    try:
        divisors = _rope_divisors(path, header)
        rope_scaling = decode_rope(header.fields, arch, divisors, head_dim(values),
                                   float(values.get("rope_theta", 10000.0)))
    except UnsupportedRope as e:
        raise CheckpointError(f"model {ref!r}: {path.name} scales its rotary embedding in a way taskfuse cannot "
                              f"rebuild ({e}); read without it, the model would compute other outputs. Fix: use the "
                              "model's safetensors checkpoint.") from e
    if rope_scaling is not None:  # only then: an unscaled file's config stays exactly what it was
        values["rope_scaling"] = rope_scaling
    key = json.dumps(values, sort_keys=True, default=str)
    if key not in _NAMES:  # a merge's inputs usually share one config: build its model skeleton once
        _NAMES[key] = _names_for(ref, path, values, arch)
    config, names = _NAMES[key]
    return dict(config), names


_NAMES: dict[str, tuple[dict, dict[str, str]]] = {}


def _names_for(ref: str, path: Path, values: dict, arch: str) -> tuple[dict, dict[str, str]]:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.for_model(**values)
        with torch.device("meta"):  # names and shapes, no memory
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:
        raise CheckpointError(f"model {ref!r}: transformers cannot build a model config from {path.name}'s metadata "
                              f"({e}). Fix: use the model's safetensors checkpoint.") from e
    names = {g: hf for hf, g in gguf_names(arch, config.num_hidden_layers, model.state_dict()).items()}
    return {**config.to_diff_dict(), "architectures": [type(model).__name__]}, names


def gemma3_query_scalar(config: dict) -> float:
    """The Gemma 3 query scaling llama.cpp applies (queries times its -1/2 power): the head width, or for the 27B
    model (62 layers) the hidden width over the heads, as Google's reference code configures each size."""
    if int(config["num_hidden_layers"]) == 62:
        return config["hidden_size"] // config["num_attention_heads"]
    return head_dim(config)


def head_dim(values: dict) -> int:
    return int(values.get("head_dim") or values["hidden_size"] // values["num_attention_heads"])


def _rope_divisors(path: Path, header: GGUFHeader) -> np.ndarray | None:
    """The float32 values of the file's rope_freqs tensor (Llama 3's rotary scaling), None without one."""
    info = next((t for t in header.tensors if t.name == FREQS_TENSOR), None)
    if info is None:
        return None
    if _gguf().GGMLQuantizationType(info.type).name != "F32":
        raise UnsupportedRope(f"{FREQS_TENSOR} is stored as {_gguf().GGMLQuantizationType(info.type).name}, not F32")
    return np.fromfile(path, dtype=np.float32, count=info.size // 4, offset=info.start)


def _config_values(header: GGUFHeader, arch: str) -> dict:
    """The config transformers derives from the file (its GGUF_CONFIG_MAPPING table), read from the header we
    already parsed: transformers' own `load_gguf_checkpoint` parses the whole file again, which for a vocabulary
    of 50-150k tokens costs 5-20 s."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    fields = header.fields
    name = str(fields.get("general.name") or "").lower()
    model_type = {"gemma3": "gemma3_text"}.get(arch, arch)
    if arch == "llama" and "mistral" in name:
        model_type = "mistral"  # llama.cpp stores Mistral under the llama architecture
    values = {"model_type": model_type}
    for prefix, table in ((arch, GGUF_CONFIG_MAPPING[arch]), ("tokenizer", GGUF_CONFIG_MAPPING["tokenizer"])):
        for key, hf_key in table.items():
            value = fields.get(f"{prefix}.{key}")
            if hf_key not in (None, -1) and value is not None:
                values[hf_key] = value
    key_length = fields.get(f"{arch}.attention.key_length")  # llama.cpp's head width, where the table has none
    if key_length is not None and "head_dim" not in values:
        values["head_dim"] = key_length
    if arch == "gemma3":  # GGUF has no key for it: what llama.cpp runs (transformers' loader leaves its default 256)
        values["query_pre_attn_scalar"] = gemma3_query_scalar(values)
    tokens = fields.get("tokenizer.ggml.tokens")
    if "vocab_size" not in values and isinstance(tokens, StringArray):
        values["vocab_size"] = tokens.length
    values["tie_word_embeddings"] = all(t.name != "output.weight" for t in header.tensors)
    return values


def _q8_0(raw: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
    """Q8_0 blocks (a float16 scale, then 32 int8 quants: 34 bytes) dequantized to float32 as scale × quant, the
    same product the gguf package's numpy code forms, in torch's threads, into `out` (contiguous float32) or a new
    tensor. The blocks are read in place from the mapping (torch only warns that it is read-only: nothing writes to
    it) and the quants converted as they are copied, then scaled in place: no intermediate array, where a copy of
    the bytes and then the product made q8_0 inputs 2.5x safetensors' merge time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        blocks = torch.from_numpy(raw).view(-1, 34)
    values = (torch.empty(blocks.shape[0] * 32) if out is None else out).view(-1, 32)
    values.copy_(blocks[:, 2:].view(torch.int8))
    values.mul_(blocks[:, :2].view(torch.float16).float())
    return values.view(-1) if out is None else out
