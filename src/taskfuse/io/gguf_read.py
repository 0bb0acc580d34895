"""A GGUF file (llama.cpp's format, often quantized) as a checkpoint: Hugging Face tensor names, shapes and config
from the file's metadata, each tensor dequantized only when the executor reads it.

The `gguf` package parses the file (memory-mapped, so an unread tensor costs nothing) and dequantizes; transformers
supplies the config table (GGUF_CONFIG_MAPPING), the model whose tensor names the `gguf` package's table maps
(built on the meta device) and the per-architecture fix-ups (`TENSOR_PROCESSORS`: llama's q/k row permutation, Gemma's
norm offset). Quantized tensors are presented as float32: the dequantized values (scale × quant + min) are exact
there and not always in half precision.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoint import Checkpoint, TensorMeta
from .gguf_names import gguf_names

# Architectures (general.architecture) read, each tested through a file transformers reads the same way; MoE ones
# (experts stacked into one tensor) and the rest are refused until they are tested too.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
_NATIVE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_AS_STORED = ("F32", "F16")  # read as mapped; BF16 (bytes to numpy) goes through the gguf package's conversion


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

    def __init__(self, ref: str, path: Path, tensors: dict[str, TensorMeta], config: dict, reader, sources, fixer):
        super().__init__(ref, path.parent, tensors, config)
        self.path = path
        self.reader = reader
        self._sources = sources  # Hugging Face name -> the reader's tensor
        self._fixer = fixer  # transformers' TensorProcessor for this architecture
        self._read_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GGUFCheckpoint({self.ref!r}, {len(self.tensors)} tensors)"

    @classmethod
    def open(cls, ref: str, path: Path) -> "GGUFCheckpoint":
        gguf = _gguf()
        try:
            reader = _reader_class()(path)
        except Exception as e:  # truncated or not a GGUF: the reader raises ValueError, struct.error, IndexError...
            raise CheckpointError(f"model {ref!r}: {path} is not a readable GGUF file ({type(e).__name__}: {e}); it "
                                  "may be truncated. Fix: download or convert it again.") from e
        arch = _field(reader, "general.architecture") or "?"
        if arch not in SUPPORTED_ARCHITECTURES:
            raise CheckpointError(f"model {ref!r}: {path.name} is a GGUF of architecture {arch!r}; taskfuse reads "
                                  f"{', '.join(SUPPORTED_ARCHITECTURES)}. Fix: use the model's safetensors checkpoint.")
        config, model = _config_and_skeleton(ref, path, reader, arch)
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

        config = {**config.to_diff_dict(), "architectures": [type(model).__name__]}
        fixer = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config)
        names = {g: hf for hf, g in gguf_names(arch, config["num_hidden_layers"], model.state_dict()).items()}
        tensors, sources = {}, {}
        for t in reader.tensors:
            if t.name not in names:
                continue  # e.g. rope_freqs, which transformers recomputes from the config
            dtype = _NATIVE.get(t.tensor_type.name, torch.float32)
            if t.tensor_type.name not in _NATIVE and t.tensor_type not in gguf.quants._type_traits:
                raise CheckpointError(f"model {ref!r}: tensor {t.name!r} in {path.name} is stored as "
                                      f"{t.tensor_type.name}, which the gguf package cannot dequantize. Fix: use a "
                                      "GGUF quantized as F32, F16, BF16, Q8_0, Q4_0/1, Q5_0/1 or a K-quant.")
            hf = names[t.name]
            tensors[hf] = TensorMeta(hf, tuple(int(n) for n in reversed(t.shape)), dtype, path.name)
            sources[hf] = t
        return cls(ref, path, tensors, config, reader, sources, fixer)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        meta, source = self.tensors[name], self._sources[name]
        try:
            if source.tensor_type.name in _AS_STORED:  # F32/F16: the mapped values themselves, no conversion
                values = np.asarray(source.data).reshape(meta.shape)
            else:
                values = _gguf().dequantize(source.data, source.tensor_type).reshape(meta.shape)
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


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _config_and_skeleton(ref: str, path: Path, reader, arch: str):
    """transformers' config for the file, and the model it describes on the meta device (names, no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.for_model(**_config_values(reader, arch))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:
        raise CheckpointError(f"model {ref!r}: transformers cannot build a model config from {path.name}'s metadata "
                              f"({e}). Fix: use the model's safetensors checkpoint.") from e
    return config, model


def _config_values(reader, arch: str) -> dict:
    """The config transformers derives from the file (its GGUF_CONFIG_MAPPING table), read from the fields the
    reader already parsed: transformers' own `load_gguf_checkpoint` parses the whole file again, which for a
    vocabulary of 50-150k tokens costs as long as our parse (5-20 s)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    name = str(_field(reader, "general.name") or "").lower()
    model_type = {"gemma3": "gemma3_text"}.get(arch, arch)
    if arch == "llama" and "mistral" in name:
        model_type = "mistral"  # llama.cpp stores Mistral under the llama architecture
    values = {"model_type": model_type}
    for prefix, table in ((arch, GGUF_CONFIG_MAPPING[arch]), ("tokenizer", GGUF_CONFIG_MAPPING["tokenizer"])):
        for key, hf_key in table.items():
            value = _field(reader, f"{prefix}.{key}")
            if hf_key not in (None, -1) and value is not None:
                values[hf_key] = value
    key_length = _field(reader, f"{arch}.attention.key_length")  # llama.cpp's head width, where the table has none
    if key_length is not None and "head_dim" not in values:
        values["head_dim"] = key_length
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if "vocab_size" not in values and tokens is not None:
        values["vocab_size"] = len(tokens.data)
    values["tie_word_embeddings"] = all(t.name != "output.weight" for t in reader.tensors)
    return values
