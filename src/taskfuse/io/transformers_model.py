"""A transformers model from any checkpoint taskfuse reads (safetensors, .bin, GGUF, BASE+ADAPTER): the class
its config names, filled with the tensors taskfuse's readers give."""
from __future__ import annotations

import torch

from ..errors import CheckpointError, IncompatibleInputsError
from .checkpoint import Checkpoint
from .gguf_read import GGUFCheckpoint


def model_class(config: dict):
    """The transformers class `config.architectures` names (the first one transformers has), else AutoModel."""
    import transformers

    classes = [getattr(transformers, name, None) for name in (config.get("architectures") or [])]
    return next((c for c in classes if c is not None), transformers.AutoModel)


def load_tokenizer(ckpt):
    """The tokenizer that belongs to a checkpoint: a folder's (or BASE+ADAPTER's, the base's) files, or a GGUF
    file's metadata."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if isinstance(ckpt, GGUFCheckpoint):
            return PreTrainedTokenizerFast.from_pretrained(str(ckpt.path.parent), gguf_file=ckpt.path.name)
        return AutoTokenizer.from_pretrained(str(ckpt.root))
    except Exception as e:
        reason = " ".join(str(e).split())  # transformers' messages run over several lines
        raise CheckpointError(f"model {ckpt.ref!r}: no tokenizer could be loaded from {ckpt.root} ({reason}). "
                              "Fix: save the model's tokenizer beside its weights (tokenizer.save_pretrained).") from e


def load_model(ckpt: Checkpoint, dtype: torch.dtype = torch.float32):
    """The model of `ckpt` in eval mode, in `dtype`; tied output embeddings re-tied."""
    import transformers

    if not ckpt.config:
        raise IncompatibleInputsError(f"model {ckpt.ref!r} has no config, so its class is unknown. Fix: give the "
                                      "folder save_pretrained wrote (with config.json), or a GGUF file.")
    config = transformers.AutoConfig.for_model(**ckpt.config)
    cls = model_class(ckpt.config)
    model = (cls.from_config(config) if cls is transformers.AutoModel else cls._from_config(config)).to(dtype)
    computed = _computed_buffers(model)
    missing, unexpected = model.load_state_dict({n: ckpt.read(n).to(dtype) for n in ckpt.tensors
                                                 if n not in computed}, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise IncompatibleInputsError(f"model {ckpt.ref!r} does not fit its own config's {cls.__name__}: missing "
                                      f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}. "
                                      "Fix: check that config.json belongs to these weights.")
    model.tie_weights()
    return model.eval()


def _computed_buffers(model) -> set[str]:
    """Buffers the class builds itself and does not save (`persistent=False`), e.g. BERT's `embeddings.position_ids`:
    checkpoints saved by older transformers hold them (sentence-transformers/all-MiniLM-L6-v2 does), and transformers'
    own loading skips them; they are not weights the checkpoint could get wrong."""
    return {name for name, _ in model.named_buffers()} - set(model.state_dict())
