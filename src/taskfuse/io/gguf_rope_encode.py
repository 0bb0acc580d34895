"""Writing scaled rotary embeddings to GGUF as llama.cpp stores them (io/gguf_rope.py describes the encoding and
reads it back): the metadata and rope_freqs tensor for a Hugging Face config, and the refusals for what GGUF cannot
carry."""
from __future__ import annotations

import json

import numpy as np

from .gguf_rope import LLAMA3_PARAMETERS, RECORD_KEY, UnsupportedRope, frequency_divisors, rope_rules

# The parameter names each rule may carry and this module writes: any other name changes the rule in ways
# llama.cpp's keys cannot say (YaRN's attention_factor, mscale...), so it is refused rather than dropped.
RULES = {"linear": {"factor"},
         "yarn": {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow"},
         "llama3": set(LLAMA3_PARAMETERS)}
_RULE_KEYS = {"rope_type", "type", "rope_theta", "truncate"}  # not parameters of the scaling itself
GEMMA3_SLIDING_THETA = 10000.0  # llama.cpp's Gemma 3 rotates its sliding layers at this base, unscaled
GEMMA3_PATTERN = 6  # llama.cpp's Gemma 3: every sixth layer global, the rest sliding


def encode_rope(config: dict, arch: str, head_dim: int) -> tuple[dict[str, object], np.ndarray | None]:
    """The GGUF metadata ({key: value}, floats and ints as written) and the rope_freqs tensor (or None) that carry
    `config`'s rotary scaling; UnsupportedRope for one GGUF cannot carry."""
    rule, sliding = rope_rules(config)
    if arch == "gemma3":
        _check_gemma3(config, sliding)
    kind = rule["rope_type"]
    if kind == "default":
        return {}, None
    _check_parameters(rule)
    if kind == "linear":
        return {f"{arch}.rope.scaling.type": "linear", f"{arch}.rope.scaling.factor": float(rule["factor"])}, None
    if kind == "yarn":
        fields = {f"{arch}.rope.scaling.type": "yarn", f"{arch}.rope.scaling.factor": float(rule["factor"])}
        original = rule.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
        if original is None:
            raise UnsupportedRope("YaRN without original_max_position_embeddings: llama.cpp needs the pre-training "
                                  "context it was extended from")
        fields[f"{arch}.rope.scaling.original_context_length"] = int(original)
        for ours, theirs in (("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow")):
            if rule.get(ours) is not None:
                fields[f"{arch}.rope.scaling.{theirs}"] = float(rule[ours])
        return fields, None
    if arch != "llama":
        raise UnsupportedRope(f"the llama3 rule on a {arch!r} model: llama.cpp reads rope_freqs only for llama")
    record = {k: rule[k] for k in sorted(RULES["llama3"])}
    return {RECORD_KEY: json.dumps(record)}, frequency_divisors(rule, head_dim)


def _check_parameters(rule: dict) -> None:
    kind = rule["rope_type"]
    if kind not in RULES:
        raise UnsupportedRope(f"the {kind!r} rotary scaling: GGUF carries linear, yarn and llama3")
    extra = sorted(k for k, v in rule.items() if k not in RULES[kind] | _RULE_KEYS and v is not None)
    if extra:
        raise UnsupportedRope(f"the {kind} rule with {', '.join(extra)}: llama.cpp's keys cannot carry it")
    if kind == "llama3" and set(RULES["llama3"]) - set(rule):
        raise UnsupportedRope(f"a llama3 rule without {', '.join(sorted(set(RULES['llama3']) - set(rule)))}")


def _check_gemma3(config: dict, sliding: dict | None) -> None:
    """llama.cpp's Gemma 3 rotates its sliding layers unscaled at base 10000 and makes every sixth layer global:
    a model otherwise laid out would run differently from the file."""
    if sliding is not None:
        kind = sliding.get("rope_type", sliding.get("type", "default"))
        theta = float(sliding.get("rope_theta", GEMMA3_SLIDING_THETA))
        if kind != "default" or theta != GEMMA3_SLIDING_THETA:
            raise UnsupportedRope(f"Gemma 3 sliding layers rotated by {kind!r} at base {theta:g}: llama.cpp "
                                  f"rotates them unscaled at {GEMMA3_SLIDING_THETA:g}")
    layers = int(config.get("num_hidden_layers", 0))
    expected = ["full_attention" if (i + 1) % GEMMA3_PATTERN == 0 else "sliding_attention" for i in range(layers)]
    if config.get("layer_types") not in (None, expected):
        raise UnsupportedRope(f"Gemma 3 layer_types other than every {GEMMA3_PATTERN}th layer global: GGUF has no key "
                              "for the pattern")
