"""`taskfuse methods NAME`'s parameter table: what each parameter accepts, read from its Params dataclass's JSON
schema (pydantic's), so a user sees `'mass' | 'count'` and `number in (0, 1]` instead of the names of type aliases."""
from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from rich.table import Table


def params_table(params_class: type) -> Table:
    fields = TypeAdapter(params_class).json_schema().get("properties", {})
    described = any(_description(f) for f in fields.values())  # few fields carry one: no empty column otherwise
    table = Table("parameter", "accepts", "default", *(["meaning"] if described else []))
    for name, field in fields.items():
        table.add_row(name, accepts(field), repr(field.get("default")),
                      *([_description(field)] if described else []))
    return table


def accepts(field: dict[str, Any]) -> str:
    """A JSON-schema field in words: enums as their values, numbers with their bounds, unions joined by "or"."""
    if "enum" in field:
        return " | ".join(repr(v) for v in field["enum"])
    if "anyOf" in field:
        kinds = [accepts(option) for option in field["anyOf"] if option.get("type") != "null"]
        nullable = len(kinds) < len(field["anyOf"])
        return " or ".join(kinds) + (" or none" if nullable else "")
    kind = field.get("type", "any")
    if kind == "array":
        return f"list of {accepts(field.get('items', {}))}"
    if kind == "object":
        return "mapping"
    return kind + _bounds(field)


def _bounds(field: dict[str, Any]) -> str:
    low = ("(", field["exclusiveMinimum"]) if "exclusiveMinimum" in field else ("[", field.get("minimum"))
    high = (")", field["exclusiveMaximum"]) if "exclusiveMaximum" in field else ("]", field.get("maximum"))
    if low[1] is None and high[1] is None:
        return ""
    if high[1] is None:
        return f" {'>' if low[0] == '(' else '≥'} {low[1]:g}"
    if low[1] is None:
        return f" {'<' if high[0] == ')' else '≤'} {high[1]:g}"
    return f" in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"


def _description(field: dict[str, Any]) -> str:
    if "description" in field:
        return field["description"]
    return next((o["description"] for o in field.get("anyOf", []) if "description" in o), "")
