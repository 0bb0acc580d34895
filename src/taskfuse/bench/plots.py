"""The report's figures: per-task normalised accuracy per method, and validation accuracy against λ."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines this runs on
import matplotlib.pyplot as plt  # noqa: E402

from ..plan.schedule import layer_index  # noqa: E402
from .table import ranked_rows  # noqa: E402


def normalized_heatmap(result: dict, path: Path) -> None:
    rows = ranked_rows(result)
    tasks = [t["name"] for t in result["tasks"]]
    grid = [[r["normalized"][t] * 100 for t in tasks] + [r["average_normalized"] * 100] for r in rows]
    percent_heatmap([r["label"] for r in rows], [*tasks, "average"], grid,
                    f"Normalised test accuracy per task ({result['variant']} zoo, {len(tasks)} tasks)",
                    "% of expert accuracy", path)


def percent_heatmap(row_labels: list[str], columns: list[str], grid: list[list[float]], title: str,
                    colorbar_label: str, path: Path) -> None:
    """Rows × columns of percentages, each cell written in; the colour scale tops out at 100 or the largest cell."""
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3 + 0.04 * max(map(len, row_labels)),
                                    0.42 * len(row_labels) + 2))
    low, high = min(min(g) for g in grid), max(100.0, max(max(g) for g in grid))
    image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if value < (low + high) / 2 else "black")
    fig.colorbar(image, ax=ax, label=colorbar_label, fraction=0.05)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scale_curves(result: dict, path: Path) -> None:
    """Validation normalised accuracy against λ (the `scale` parameter); other parameters at their chosen value."""
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = plt.get_cmap("tab20").colors  # more methods than the default cycle's ten colours
    for i, m in enumerate(result["methods"]):
        chosen = {k: v for k, v in m["params"].items() if k != "scale"}
        points = sorted((t["params"]["scale"], t["validation_normalized"] * 100) for t in m["trials"]
                        if "scale" in t["params"] and {k: v for k, v in t["params"].items() if k != "scale"} == chosen)
        if len(points) > 1:
            ax.plot(*zip(*points), marker="osD^v"[i % 5], color=colors[i % len(colors)], label=m["method"])
    ax.set_xlabel("λ (scale)")
    ax.set_ylabel("validation normalised accuracy (%)")
    ax.set_title("Accuracy against λ on the validation split (other parameters at their chosen values)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves fill the axes
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def coefficient_heatmap(tensor_weights: dict[str, list[float]], tasks: list[str], title: str, path: Path) -> None:
    """Learned Λ as layer × task: each layer's tensors averaged (tensors outside the layer stack: "other")."""
    groups: dict[str, list[list[float]]] = {}
    for name, weights in tensor_weights.items():
        index = layer_index(name)
        groups.setdefault("other" if index is None else f"layer {index}", []).append(weights)
    labels = sorted(groups, key=lambda g: (g == "other", int(g.split()[1]) if g != "other" else 0))
    grid = [[sum(w[t] for w in groups[g]) / len(groups[g]) for t in range(len(tasks))] for g in labels]
    fig, ax = plt.subplots(figsize=(0.9 * len(tasks) + 3, 0.4 * len(labels) + 2))
    image = ax.imshow(grid, cmap="magma", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="grey")
    fig.colorbar(image, ax=ax, label="coefficient λ (mean over the layer's tensors)", fraction=0.05)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
