"""Scaled rotary embeddings in GGUF: transformers' rope parameters ↔ llama.cpp's metadata, both directions.

llama.cpp stores the rules it applies in two ways, and this module uses the same ones so that a file means the same
to it, to transformers (through our reader) and to us:
- linear and YaRN as keys: `{arch}.rope.scaling.type`, `.factor`, `.original_context_length` and YaRN's
  `.yarn_beta_fast`/`.yarn_beta_slow`;
- Llama 3's rule (llama3) as the tensor `rope_freqs.weight`: one divisor per rotary frequency (llama.cpp divides each
  frequency by it), with no scaling keys, since llama.cpp would apply a factor on top. The divisors are transformers'
  own default frequencies over its llama3 frequencies. The exact parameters also go under `taskfuse.rope_scaling`;
  a file without that record (llama.cpp's converter writes none) has its parameters fitted to the divisors.

Anything else (dynamic, longrope, YaRN's attention-factor variants) is refused by name: a file read with the
scaling dropped gives other outputs with no error at all. Writing is io/gguf_rope_encode.py.
"""
from __future__ import annotations

import json

import numpy as np

RECORD_KEY = "taskfuse.rope_scaling"
FREQS_TENSOR = "rope_freqs.weight"
# Llama 3's pre-training context: what a llama.cpp file's rule is fitted at when the file names none. The llama3 rule
# depends on (context, low_freq_factor, high_freq_factor) only through their ratios, so any one context fits equally.
LLAMA3_CONTEXT = 8192
LLAMA3_PARAMETERS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


class UnsupportedRope(ValueError):
    """A rotary scaling GGUF cannot carry (writing) or taskfuse cannot rebuild (reading); the message says which."""


def rope_rules(config: dict) -> tuple[dict, dict | None]:
    """(the rule of the global layers, the rule of Gemma 3's sliding layers or None), each with rope_type and
    rope_theta, from a Hugging Face config: transformers 5's `rope_parameters` (flat, or per layer type) or the
    older `rope_scaling` + `rope_theta`."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    sliding = None
    if "full_attention" in rope or "sliding_attention" in rope:
        sliding, rope = rope.get("sliding_attention"), rope.get("full_attention") or {}
    rule = {**rope, "rope_type": rope.get("rope_type", rope.get("type", "default"))}
    rule.pop("type", None)
    if rule.get("rope_theta") is None and config.get("rope_theta") is not None:
        rule["rope_theta"] = config["rope_theta"]
    return rule, sliding


def frequency_divisors(rule: dict, head_dim: int) -> np.ndarray:
    """llama.cpp's `rope_freqs` for a llama3 rule: each rotary frequency's default value over its scaled value,
    both as transformers computes them (float32, head_dim / 2 entries)."""
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    theta = float(rule["rope_theta"])
    default = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    config = LlamaConfig(hidden_size=head_dim, num_attention_heads=1, head_dim=head_dim,
                         max_position_embeddings=int(rule["original_max_position_embeddings"]) * int(rule["factor"]),
                         rope_parameters={**{k: rule[k] for k in LLAMA3_PARAMETERS}, "rope_type": "llama3",
                                          "rope_theta": theta})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    return (default / scaled).numpy().astype(np.float32)


def decode_rope(fields: dict, arch: str, divisors: np.ndarray | None, head_dim: int,
                theta: float) -> dict | None:
    """transformers' rope_scaling for a GGUF's metadata `fields` and its rope_freqs tensor `divisors` (or None),
    None when the file's rotary embedding is not scaled; UnsupportedRope for a rule that cannot be rebuilt."""
    kind = str(fields.get(f"{arch}.rope.scaling.type") or "none")
    if divisors is not None and np.all(divisors == 1.0):  # llama.cpp divides every frequency by 1: unscaled
        divisors = None
    if divisors is not None:
        if kind != "none":
            raise UnsupportedRope(f"both rope_freqs and {arch}.rope.scaling.type = {kind!r}: llama.cpp would apply "
                                  "both, transformers cannot")
        if arch != "llama":
            raise UnsupportedRope(f"a rope_freqs tensor in a {arch!r} file: taskfuse rebuilds it only as llama's "
                                  "llama3 rule")
        record = fields.get(RECORD_KEY)
        rule = _recorded_llama3(str(record)) if record else _fit_llama3(fields, arch, divisors, head_dim, theta)
        rule = {"rope_type": "llama3", **rule}
        error = np.abs(frequency_divisors({**rule, "rope_theta": theta}, head_dim) - divisors).max()
        if not error <= 1e-5 * float(rule["factor"]):
            raise UnsupportedRope(f"rope_freqs is not Llama 3's rule ({json.dumps(rule)} misses it by {error:.2g})")
        return rule
    factor = fields.get(f"{arch}.rope.scaling.factor")
    if kind == "none" or (kind == "linear" and factor in (None, 1.0)):
        return None
    for key in ("attn_factor", "yarn_attn_factor", "yarn_ext_factor", "yarn_log_multiplier"):
        if fields.get(f"{arch}.rope.scaling.{key}") is not None:
            raise UnsupportedRope(f"{arch}.rope.scaling.{key} is set: transformers' {kind} rule has no such term")
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        original = fields.get(f"{arch}.rope.scaling.original_context_length")
        if factor is None or original is None:
            raise UnsupportedRope("YaRN without its factor or original context length")
        rule = {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original)}
        for ours, theirs in (("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow")):
            if fields.get(f"{arch}.rope.scaling.{theirs}") is not None:
                rule[ours] = float(fields[f"{arch}.rope.scaling.{theirs}"])
        return rule
    raise UnsupportedRope(f"{arch}.rope.scaling.type = {kind!r}: taskfuse rebuilds linear, yarn and llama3")


def _recorded_llama3(record: str) -> dict:
    """The llama3 parameters our writer recorded; UnsupportedRope for a record that is not what it writes (a file
    edited or written by another tool), rather than a KeyError deep in transformers' rope code."""
    try:
        rule = json.loads(record)
    except json.JSONDecodeError as e:
        raise UnsupportedRope(f"{RECORD_KEY} is not JSON ({e})") from e
    if not isinstance(rule, dict) or set(rule) != set(LLAMA3_PARAMETERS) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in rule.values()):
        raise UnsupportedRope(f"{RECORD_KEY} = {record[:200]} is not the positive numbers "
                              f"{', '.join(LLAMA3_PARAMETERS)} of a llama3 rule")
    return rule


def _fit_llama3(fields: dict, arch: str, divisors: np.ndarray, head_dim: int, theta: float) -> dict:
    """The llama3 parameters that give `divisors`, at the file's original context (or Llama 3's). Between the
    unscaled and the fully scaled frequencies, 1/divisor is linear in the frequency: its slope and intercept give
    the two frequency factors."""
    context = int(fields.get(f"{arch}.rope.scaling.original_context_length") or LLAMA3_CONTEXT)
    factor = float(divisors.max())
    inverse = 1.0 / divisors.astype(np.float64)
    blend = (inverse - 1 / factor) / (1 - 1 / factor)  # 1 where unscaled, 0 where divided by the full factor
    between = (blend > 1e-4) & (blend < 1 - 1e-4)
    if factor <= 1 or between.sum() < 2:
        raise UnsupportedRope("rope_freqs has fewer than two frequencies between the scaled and unscaled bands: "
                              "its llama3 frequency factors cannot be told apart")
    frequency = 1.0 / (theta ** (np.arange(0, head_dim, 2) / head_dim))
    x = context * frequency / (2 * np.pi)  # the context over each frequency's wavelength
    slope, intercept = np.polyfit(x[between], blend[between], 1)
    low = -intercept / slope
    high = low + 1 / slope
    rule = {"factor": round(factor, 4), "low_freq_factor": round(low, 4), "high_freq_factor": round(high, 4),
            "original_max_position_embeddings": context}
    return rule
