"""`taskfuse plan`'s table: the plan's jobs with the tensors that differ only in their layer number and share
everything else (method, parameters, sources, weights) on one row, `model.layers.{0-31}.mlp.down_proj.weight`, so a
model of many layers reads in a screen; `--json` keeps one entry per tensor."""
from __future__ import annotations

from rich.table import Column, Table

from ..plan.plan import Plan
from ..plan.schedule import LAYER


def plan_table(plan: Plan) -> Table:
    rows: dict[tuple, tuple[list[int], set[str]]] = {}  # what a row shows but its layers and shards → those
    for job in plan.jobs:
        found = LAYER.search(job.name)
        pattern = job.name[:found.start(1)] + "{}" + job.name[found.end(1):] if found else job.name
        params = ", ".join(f"{k}={v}" for k, v in job.params.items() if v is not None)
        sources = ", ".join(str(s.checkpoint) for s in job.sources)
        weights = ", ".join(f"{w:g}" for w in job.weights)
        layers, shards = rows.setdefault((pattern, job.method, params, sources, weights), ([], set()))
        if found:
            layers.append(int(found.group(1)))
        shards.add(job.shard)
    # the name and the parameters whole, folded where a column is narrow, never cut short
    table = Table(Column("tensor", overflow="fold"), "method", Column("params", overflow="fold"), "sources",
                  "weights", "shard")
    for (pattern, *shown), (layers, shards) in rows.items():
        name = pattern if not layers else pattern.replace("{}", str(layers[0]) if len(layers) == 1 else
                                                          "{" + spans(layers) + "}")
        table.add_row(name, *shown, shard_text(sorted(shards)))
    return table


def spans(numbers: list[int]) -> str:
    """0-3, 5, 7-9 for [0, 1, 2, 3, 5, 7, 8, 9]."""
    out, ordered = [], sorted(set(numbers))
    start = previous = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == previous + 1:
            previous = n
            continue
        out.append(str(start) if start == previous else f"{start}-{previous}")
        if n is not None:
            start = previous = n
    return ", ".join(out)


def shard_text(shards: list[str]) -> str:
    return ", ".join(shards) if len(shards) <= 2 else f"{shards[0]} … {shards[-1]} ({len(shards)} files)"
