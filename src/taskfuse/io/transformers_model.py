"""A transformers model from any checkpoint taskfuse reads (safetensors, .bin, GGUF, BASE+ADAPTER): the class
its config names, filled with the tensors taskfuse's readers give."""
from __future__ import annotations

import torch

from ..errors import IncompatibleInputsError
from .checkpoint import Checkpoint


def model_class(config: dict):
    """The transformers class `config.architectures` names (the first one transformers has), else AutoModel."""
    import transformers

    classes = [getattr(transformers, name, None) for name in (config.get("architectures") or [])]
    return next((c for c in classes if c is not None), transformers.AutoModel)


def load_model(ckpt: Checkpoint, dtype: torch.dtype = torch.float32):
    """The model of `ckpt` in eval mode, in `dtype`; tied output embeddings re-tied."""
    import transformers

    if not ckpt.config:
        raise IncompatibleInputsError(f"model {ckpt.ref!r} has no config, so its class is unknown. Fix: give the "
                                      "folder save_pretrained wrote (with config.json), or a GGUF file.")
    config = transformers.AutoConfig.for_model(**ckpt.config)
    cls = model_class(ckpt.config)
    model = (cls.from_config(config) if cls is transformers.AutoModel else cls._from_config(config)).to(dtype)
    missing, unexpected = model.load_state_dict({n: ckpt.read(n).to(dtype) for n in ckpt.tensors}, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise IncompatibleInputsError(f"model {ckpt.ref!r} does not fit its own config's {cls.__name__}: missing "
                                      f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}. "
                                      "Fix: check that config.json belongs to these weights.")
    model.tie_weights()
    return model.eval()
