"""Per-layer parameter schedules: a list of values interpolated across the model's depth (mergekit 'gradients')."""
from __future__ import annotations

import re
from typing import Any

LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def layer_index(name: str) -> int | None:
    m = LAYER.search(name)
    return int(m.group(1)) if m else None


def depth_position(name: str, num_layers: int) -> float:
    """Position in [0, 1] along the depth: layer i of L at i/(L-1). Tensors outside the layer stack (embeddings,
    final norm, heads) take position 0, i.e. the schedule's first value, as mergekit does (checked against
    mergekit 0.1.5 in tests/methods/test_reference_mergekit.py), so a mergekit gradient means the same here."""
    idx = layer_index(name)
    return 0.0 if idx is None else idx / max(num_layers - 1, 1)


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
