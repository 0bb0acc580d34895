"""mergekit's parameter settings as taskfuse's parameters and overrides.

A mergekit setting is a value, a gradient (a list of numbers interpolated over a slice's layers), or a list of
conditional rules `{filter, value}`. mergekit takes the first rule whose filter is a substring of the tensor's name
(no filter, or "*", matches every tensor), and where none matches it falls back to the next level: a source's
setting, then its slice's, then the config's. taskfuse's overrides are globs where the last match wins, over the
spec's `params`. So a rule list becomes: its first catch-all in `params`, the filtered rules before it as overrides
in reverse order, and nothing of what follows the catch-all, which mergekit never reaches.
"""
from __future__ import annotations

import glob
from typing import Any

from ..plan.schedule import interpolate

Rule = tuple[str | None, Any]  # (filter, or None for every tensor; value)


def is_rule_list(setting: Any) -> bool:
    return isinstance(setting, list) and bool(setting) and all(isinstance(v, dict) for v in setting)


def rules_of(setting: Any) -> list[Rule]:
    """A setting as its rules; a plain value or gradient is one rule for every tensor."""
    if is_rule_list(setting):
        return [(None if rule.get("filter") in (None, "*") else rule["filter"], rule["value"]) for rule in setting]
    return [(None, setting)]


def reachable(rules: list[Rule]) -> list[Rule]:
    """The rules mergekit can reach: up to and including the first catch-all."""
    out = []
    for rule in rules:
        out.append(rule)
        if rule[0] is None:
            break
    return out


def split(rules: list[Rule]) -> tuple[Any, list[Rule]]:
    """(the catch-all's value or None, the filtered rules before it, last to first: the order overrides win in)."""
    rules = reachable(rules)
    catch_all = rules[-1][1] if rules and rules[-1][0] is None else None
    return catch_all, [r for r in reversed(rules) if r[0] is not None]


def filter_glob(name_part: str) -> str:
    """A glob matching every tensor whose name contains `name_part` (mergekit's filters are substrings)."""
    return f"*{glob.escape(name_part)}*"


def at_position(value: Any, position: float) -> Any:
    """A gradient's value at `position` in [0, 1] of its slice, as mergekit evaluates it; other values unchanged."""
    if not isinstance(value, list) or not value:
        return value
    if all(isinstance(v, (int, float)) for v in value):  # flags too: mergekit interpolates them as numbers
        return interpolate(value, position)
    return value[int(position * (len(value) - 1))]  # a list of names steps instead
