"""PEFT LoRA adapters read as full models: an adapted tensor is computed when read, exactly as PEFT merges it.

A spec may name an adapter directory (its base is the config's `base_model_name_or_path`) or `BASE+ADAPTER`. The
adapter then looks like any checkpoint with the base's tensor names: untouched tensors are the base's own (mapped
without a copy), adapted ones are W + scaling·B·A in float32 (so the update is not rounded into a bf16 base), DoRA
ones are PEFT's merged weight m·(W + ΔW)/‖W + ΔW‖, and `modules_to_save` tensors replace the base's. Every
delta-space method therefore merges adapters by their weight updates, not their factors.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AdapterError, CheckpointError, HubUnavailableError
from .checkpoint import Checkpoint, TensorMeta, _read_safetensors_headers, _bin_headers

ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
# Config keys of LoRA variants whose update is not W + scaling·B·A (or is not applied to every token), so merging
# them as if it were would be silently wrong.
UNSUPPORTED_VARIANTS = ("lora_bias", "layer_replication", "target_parameters", "use_qalora", "use_bdlora",
                        "alora_invocation_tokens", "trainable_token_indices", "monteclora_config", "kasa_config",
                        "velora_config")


@dataclass(frozen=True)
class LoraUpdate:
    """How one base tensor changes: scaling · B·A (transposed for embeddings and fan-in-fan-out layers)."""

    target: str
    lora_a: str
    lora_b: str
    scaling: float
    transpose: bool
    magnitude: str | None = None  # DoRA's per-output-row magnitude vector

    @property
    def kind(self) -> str:
        return "embedding" if "lora_embedding" in self.lora_a else "conv1d" if self.transpose else "linear"

    def delta(self, factors: Checkpoint) -> torch.Tensor:
        a, b = factors.read(self.lora_a).float(), factors.read(self.lora_b).float()
        product = b @ a
        return (product.T if self.transpose else product) * self.scaling


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).exists()


class AdapterCheckpoint:
    """A base checkpoint with a PEFT LoRA adapter applied, tensor by tensor, behind Checkpoint's interface."""

    def __init__(self, ref: str, base: Checkpoint, factors: Checkpoint, updates: dict[str, LoraUpdate],
                 replaced: dict[str, str], peft_config: dict):
        self.ref, self.base, self.factors = ref, base, factors
        self.updates, self.replaced, self.peft_config = updates, replaced, peft_config
        self.root, self.config = base.root, base.config  # config and tokenizer are the base's
        self.tensors: dict[str, TensorMeta] = {}
        for name, meta in base.tensors.items():
            if name in replaced:
                meta = factors.meta(replaced[name])
            if name in updates:
                meta = TensorMeta(name, meta.shape, torch.float32, factors.meta(updates[name].lora_a).file)
            self.tensors[name] = TensorMeta(name, meta.shape, meta.dtype, meta.file)

    def __repr__(self) -> str:
        return f"AdapterCheckpoint({self.ref!r}, {len(self.updates)} adapted tensors)"

    @classmethod
    def open(cls, ref: str, adapter_dir: Path, base_ref: str | None = None,
             base_dir: Path | None = None) -> "AdapterCheckpoint":
        peft_config = read_adapter_config(ref, adapter_dir)
        base_ref = base_ref or peft_config.get("base_model_name_or_path")
        if not base_ref:
            raise AdapterError(f"adapter {ref!r}: {ADAPTER_CONFIG} names no base_model_name_or_path. Fix: name "
                               "the base in the spec as BASE+ADAPTER.")
        try:
            base = Checkpoint.open(base_ref, base_dir)
        except CheckpointError as e:
            kind = HubUnavailableError if isinstance(e, HubUnavailableError) else AdapterError
            raise kind(f"adapter {ref!r}: its base {base_ref!r} cannot be opened ({e}). Fix: name a local base in "
                       f"the spec as BASE+ADAPTER (e.g. /models/base+{adapter_dir}).") from e
        if isinstance(base, AdapterCheckpoint):
            raise AdapterError(f"adapter {ref!r}: its base {base_ref!r} is itself an adapter. Fix: merge that "
                               "adapter into its base first, or name the full base as BASE+ADAPTER.")
        factors = Checkpoint(ref, adapter_dir, _adapter_tensors(ref, adapter_dir))
        updates, replaced = read_updates(ref, peft_config, factors, base)
        return cls(ref, base, factors, updates, replaced, peft_config)

    def meta(self, name: str) -> TensorMeta:
        return self.tensors[name]

    def map(self, name: str) -> torch.Tensor | None:
        if name in self.updates:
            return None
        if name in self.replaced:
            return self.factors.map(self.replaced[name])
        return self.base.map(name)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        if name not in self.updates:
            if name in self.replaced:
                return self.factors.read(self.replaced[name], out)
            return self.base.read(name, out)
        update = self.updates[name]
        weight = (self.factors.read(self.replaced[name]) if name in self.replaced else self.base.read(name)).float()
        merged = weight + update.delta(self.factors)
        if update.magnitude is not None:  # DoRA: each output row rescaled to the learned magnitude
            magnitude = self.factors.read(update.magnitude).float()
            merged = merged * (magnitude / torch.linalg.norm(merged, dim=1)).view(-1, 1)
        return merged if out is None else out.copy_(merged)

    def delta(self, name: str) -> torch.Tensor | None:
        """scaling · B·A for an adapted tensor (float32), None for one the adapter does not factorise."""
        update = self.updates.get(name)
        return None if update is None or update.magnitude is not None else update.delta(self.factors)


def read_adapter_config(ref: str, adapter_dir: Path) -> dict:
    path = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AdapterError(f"adapter {ref!r}: {path} is not readable JSON ({e}). Fix: save the adapter again "
                           "with PeftModel.save_pretrained.") from e
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type != "LORA":
        raise AdapterError(f"adapter {ref!r}: PEFT type {peft_type!r} is not supported; taskfuse reads LoRA "
                           "adapters (including rsLoRA and DoRA). Fix: merge this adapter into its base with "
                           "peft's merge_and_unload() and give the merged model.")
    variants = [k for k in UNSUPPORTED_VARIANTS if config.get(k)]
    if variants:
        raise AdapterError(f"adapter {ref!r} uses the LoRA variant option(s) {', '.join(variants)}, whose update "
                           "is not W + scaling·B·A. Fix: merge it into its base with peft's merge_and_unload() "
                           "and give the merged model.")
    return config


def _adapter_tensors(ref: str, adapter_dir: Path) -> dict[str, TensorMeta]:
    if (adapter_dir / "adapter_model.safetensors").exists():
        return _read_safetensors_headers(ref, adapter_dir, ["adapter_model.safetensors"])
    if (adapter_dir / "adapter_model.bin").exists():
        return _bin_headers(ref, adapter_dir, ["adapter_model.bin"])
    raise AdapterError(f"adapter {ref!r}: {adapter_dir} has {ADAPTER_CONFIG} but no adapter_model.safetensors or "
                       "adapter_model.bin. Fix: download the complete adapter.")


def pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key that matches the end of the module's name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_updates(ref: str, config: dict, factors: Checkpoint,
                 base: Checkpoint) -> tuple[dict[str, LoraUpdate], dict[str, str]]:
    """Each adapted base tensor's update and each replaced base tensor's source, checked against the base."""
    names = {k: (k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k) for k in factors.tensors}
    resolve = BaseNames(base)
    pairs: dict[str, dict[str, str]] = {}
    replaced: dict[str, str] = {}
    errors: list[str] = []
    for key, name in names.items():
        match = re.fullmatch(r"(.+)\.(lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B|"
                             r"lora_magnitude_vector(?:\.weight)?)", name)
        if match:
            pairs.setdefault(match.group(1), {})[match.group(2).split(".")[0]] = key
            continue
        if ".original_module." in name:  # PEFT's copy of the base module beside a modules_to_save one
            continue
        if ".lora_" in name:
            errors.append(f"tensor {key!r} is a LoRA part taskfuse does not know (bias, convolution or a newer "
                          "variant)")
            continue
        target = resolve(name.replace(".modules_to_save", "").replace(".base_layer", ""))
        if target is None:
            errors.append(f"tensor {key!r} (modules_to_save) has no counterpart in the base")
        else:
            replaced[target] = key
    updates: dict[str, LoraUpdate] = {}
    for module, parts in pairs.items():
        try:
            update = module_update(config, module, parts, factors, resolve)
        except AdapterError as e:
            errors.append(str(e))
            continue
        updates[update.target] = update
        shape = factors.meta(replaced[update.target]).shape if update.target in replaced else \
            base.meta(update.target).shape
        a, b = factors.meta(update.lora_a).shape, factors.meta(update.lora_b).shape
        out_in = (a[1], b[0]) if update.transpose else (b[0], a[1])
        if tuple(shape) != out_in or a[0] != b[1]:
            errors.append(f"module {module!r}: B·A is {b[0]}×{b[1]} · {a[0]}×{a[1]} but the base tensor "
                          f"{update.target!r} is {'×'.join(map(str, shape))} (an adapter for a different base?)")
    if errors:
        listed = "\n".join(f"  - {e}" for e in errors[:12]) + (f"\n  - … {len(errors) - 12} more" if len(errors) > 12
                                                               else "")
        raise AdapterError(f"adapter {ref!r} does not fit its base {base.ref!r} ({len(errors)} problem"
                           f"{'s' if len(errors) > 1 else ''}):\n{listed}\nFix: give the base the adapter was "
                           "trained on (BASE+ADAPTER in the spec).")
    return updates, replaced


def module_update(config: dict, module: str, parts: dict[str, str], factors: Checkpoint, resolve) -> LoraUpdate:
    embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
    a_key, b_key = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
    if a_key not in parts or b_key not in parts:
        raise AdapterError(f"module {module!r} has only one of {a_key}/{b_key}")
    a_shape = factors.meta(parts[a_key]).shape
    if len(a_shape) != 2:
        raise AdapterError(f"module {module!r}: LoRA factors of rank {len(a_shape)} (convolution) are not supported")
    if "lora_magnitude_vector" in parts and (embedding or config.get("fan_in_fan_out")):
        raise AdapterError(f"module {module!r}: DoRA on an embedding or a fan-in-fan-out layer is not supported")
    target = resolve(f"{module}.weight")
    if target is None:
        raise AdapterError(f"module {module!r} has no weight {module}.weight in the base")
    r = pattern_value(config.get("rank_pattern") or {}, module, config.get("r"))
    alpha = pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha"))
    if r != a_shape[0]:
        raise AdapterError(f"module {module!r}: the config gives rank {r} but lora_A has {a_shape[0]} rows")
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return LoraUpdate(target, parts[a_key], parts[b_key], scaling,
                      transpose=embedding or bool(config.get("fan_in_fan_out")),
                      magnitude=parts.get("lora_magnitude_vector"))


class BaseNames:
    """An adapter's tensor name → the base's: PEFT names modules as in the model it wrapped, which may add or drop
    a prefix against the saved base (BertForSequenceClassification's `bert.` over BertModel's names)."""

    def __init__(self, base: Checkpoint):
        self.names = set(base.tensors)

    def __call__(self, name: str) -> str | None:
        if name in self.names:
            return name
        parts = name.split(".")
        for i in range(1, len(parts)):  # the adapter's model wrapped the base's: drop its outer prefix
            if ".".join(parts[i:]) in self.names:
                return ".".join(parts[i:])
        longer = [n for n in self.names if n.endswith("." + name)]  # the base wraps the adapter's model
        return longer[0] if len(longer) == 1 else None
