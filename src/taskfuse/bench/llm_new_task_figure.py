"""The LLM new-task study's figure: exact match per held-out task for every row, the seeded rows with the range of
their seeds, drawn from a committed result.json (scripts/update_docs_tables.py renders it next to it), so that a
reader sees per task what the table's averages hide."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines this runs on
import matplotlib.pyplot as plt  # noqa: E402

from .llm_new_task import ROWS  # noqa: E402


def figure_bars(result: dict) -> tuple[list[str], dict[str, tuple[list[float], list[float], list[float]]]]:
    """The tasks (a task file's marked), and per row: exact match % per task, and the lowest and highest seed's
    (the mean itself where the row ran once)."""
    tasks, files = list(result["rows"]), result.get("task_files", {})
    bars = {}
    for key, label in ROWS.items():
        mean = [100 * result["rows"][t][key]["exact_match"] for t in tasks]
        seeds = [[100 * s["exact_match"] for s in result["details"][t].get("per_seed", {}).get(key, [])] or [m]
                 for t, m in zip(tasks, mean)]
        bars[label] = (mean, [min(s) for s in seeds], [max(s) for s in seeds])
    return [f"{t}\n(task file)" if t in files else t for t in tasks], bars


def new_task_figure(result: dict, path: Path) -> None:
    tasks, bars = figure_bars(result)
    fig, ax = plt.subplots(figsize=(1.5 * len(tasks) + 3, 5.4))
    width = 0.8 / len(bars)
    for i, (label, (mean, low, high)) in enumerate(bars.items()):
        spread = [[m - lo for m, lo in zip(mean, low)], [hi - m for m, hi in zip(mean, high)]]
        ax.bar([j + i * width for j in range(len(tasks))], mean, width, label=label,
               yerr=spread if any(map(any, spread)) else None, capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("exact match on the test questions (%)")
    seeds = result.get("seeds", [0])
    ax.set_title("A task the LoRA library never saw, from 5 examples per answer"
                 + (f" (bars: mean over seeds {seeds}, whiskers: lowest and highest seed)" if len(seeds) > 1 else ""),
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # the same bytes from the same result
    plt.close(fig)
