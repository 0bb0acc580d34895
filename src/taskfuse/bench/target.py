"""One measured target (what an issue asked, what a committed result measured, whether it is met), the wording of
its margin, the rows targets compare against, and README's table of them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    issue: int
    asked: str      # the target, in the issue's terms
    measured: str   # the committed numbers it is judged on, and the rows they come from
    margin: str     # how far above (+) or short (−) of the target, in its unit; "" where not measured
    met: bool | None  # None: the committed result does not measure it
    source: str     # the result folder under benchmarks/results/


def signed(value: float, unit: str, digits: int = 2) -> str:
    return f"{value:+.{digits}f} {unit}".replace("-", "−")


def points(value: float) -> str:
    return signed(value, "points")


def best_row(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: r["average"]["normalized"])


def best_data_free(full: dict, additions: dict | None = None) -> tuple[dict, str]:
    """bench-full's best data-free row, or a data-free method registered since (benchmarks/data_free_additions.py)
    that beats it over the same experts, with the result it comes from. The study counts only where its anchors
    (task arithmetic, Iso-CTS, at the parameters this bench-full run chose) scored to the digit as this run's rows
    did: the same experts, splits and evaluation, whichever commit made either result."""
    best = best_row(full["methods"])
    rows = {r["method"]: r for r in full["methods"]}
    if additions is None or any(a["method"] not in rows or rows[a["method"]].get("params") != a.get("params")
                                or a["average"]["normalized"] != rows[a["method"]]["average"]["normalized"]
                                for a in additions["anchors"]):
        return best, "bench-full"
    added = best_row(additions["rows"])
    return (added, "data-free-additions") if added["average"]["normalized"] > best["average"]["normalized"] else \
        (best, "bench-full")


def markdown(targets: list[Target]) -> str:
    lines = ["| issue | target | committed measurement | margin | met | result |", "|---|---|---|---|---|---|"]
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    for t in targets:
        lines.append(f"| {t.issue} | {t.asked} | {t.measured} | {t.margin} | {verdict[t.met]} | "
                     f"[{t.source}](benchmarks/results/{t.source}/) |")
    return "\n".join(lines)
