"""Per-layer parameter schedules: a list of values interpolated across the model's depth (mergekit 'gradients')."""
from __future__ import annotations

import re
from typing import Any

LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
# Tensors outside the layer stack sit at the start (embeddings) or the end (final norm, heads) of the depth axis.
EMBEDDING_HINTS = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type_embeddings")


def layer_index(name: str) -> int | None:
    m = LAYER.search(name)
    return int(m.group(1)) if m else None


def depth_position(name: str, num_layers: int) -> float:
    """Position in [0, 1] along the depth: layer i of L at i/(L-1); embeddings at 0, everything else outside at 1."""
    idx = layer_index(name)
    if idx is None:
        return 0.0 if any(h in name for h in EMBEDDING_HINTS) else 1.0
    return idx / max(num_layers - 1, 1)


def interpolate(values: list[float], position: float) -> float:
    """Piecewise-linear value at `position` for anchor values evenly spaced over [0, 1]."""
    if len(values) == 1:
        return float(values[0])
    x = position * (len(values) - 1)
    lo = min(int(x), len(values) - 2)
    frac = x - lo
    return float(values[lo]) * (1 - frac) + float(values[lo + 1]) * frac


def resolve(params: dict[str, Any], name: str, num_layers: int) -> dict[str, Any]:
    """Replace every list-valued (scheduled) parameter by its value for tensor `name`."""
    pos = None
    out = {}
    for key, value in params.items():
        if isinstance(value, list):
            pos = depth_position(name, num_layers) if pos is None else pos
            out[key] = interpolate(value, pos)
        else:
            out[key] = value
    return out
