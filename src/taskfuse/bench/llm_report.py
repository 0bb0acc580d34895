"""The LLM benchmark's report, made from its result alone (so a committed result.json can be re-rendered):
result.json, results.md, a heat map of every row's normalised scores per task, the learning curves of the rows
that learn (the MoE's router tuning, aTLAS), and report.html with all of it and the provenance."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io.output import staged_output  # noqa: E402
from .plots import percent_heatmap  # noqa: E402
from .report import commit_text, html_image, html_table  # noqa: E402

METRICS = {"exact_match": "EM", "likelihood_accuracy": "LL"}  # the two scores, as the columns abbreviate them
EXPERTS_ROW = "experts (each on its own task)"  # every row is normalised by it


def write_llm_report(result: dict, out: Path) -> Path:
    with staged_output(Path(out), "report") as stage:
        (stage / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (stage / "results.md").write_text(markdown(result))
        figures = {"normalised exact match and likelihood accuracy per task": stage / "normalised.png"}
        normalised_figure(result, figures["normalised exact match and likelihood accuracy per task"])
        curves = learning_curves(result)
        if curves:
            figures["training losses of the rows that learn"] = stage / "learning.png"
            learning_figure(curves, figures["training losses of the rows that learn"])
        (stage / "report.html").write_text(render_html(result, figures))
    return Path(out)


def per_task_cells(result: dict) -> list[list[str]]:
    tasks = list(result["tasks"])
    return [[name, *(f"{100 * scores[t]['exact_match']:.0f} / {100 * scores[t]['likelihood_accuracy']:.0f}"
                      for t in tasks),
             f"{100 * result['summary'][name]['exact_match']:.1f}",
             f"{100 * result['summary'][name]['likelihood_accuracy']:.1f}"] for name, scores in result["rows"].items()]


def header(result: dict) -> list[str]:
    return ["row", *result["tasks"], "EM norm.", "LL acc. norm."]


def markdown(result: dict) -> str:
    head = header(result)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in per_task_cells(result)]
    return ("Per task: exact match / likelihood accuracy (%) on test; the last two columns average each over the "
            "tasks, normalised by the task's own expert.\n\n" + "\n".join(lines) +
            f"\n\n`{result['command']}` at {(result['code'] or {}).get('commit')}, {result['seconds']} s\n")


def normalised(result: dict, name: str, task: str, metric: str) -> float | None:
    """A row's score on one task as a percentage of the task's expert (None where the expert scores 0)."""
    own = result["rows"][EXPERTS_ROW][task][metric]
    return 100 * result["rows"][name][task][metric] / own if own > 0 else None


def normalised_figure(result: dict, path: Path) -> None:
    """One heat map: rows × (each task's exact match, then each task's likelihood accuracy, then both averages)."""
    tasks = list(result["tasks"])
    names = [n for n in result["rows"] if n != EXPERTS_ROW]
    columns = [f"{t} ({short})" for short in METRICS.values() for t in tasks] + [f"{short} average"
                                                                              for short in METRICS.values()]
    grid = [[normalised(result, n, t, m) or 0.0 for m in METRICS for t in tasks] +
            [100 * result["summary"][n][m] for m in METRICS] for n in names]
    percent_heatmap(names, columns, grid, "LLM benchmark: test scores as % of each task's own expert",
                    "% of the task's expert", path)


def learning_curves(result: dict) -> dict[str, dict[str, list[float]]]:
    """Per row that learns, its losses by step: panel title → series label → values."""
    curves = {}
    tuning = result.get("moe_tuning") or {}
    if tuning.get("losses"):
        curves["MoE router tuning"] = {"next-token loss on the train answers": tuning["losses"],
                                       **({"routing loss": tuning["routing_losses"]}
                                          if tuning.get("routing_losses") else {})}
    for name, summary in (result.get("learned") or {}).items():
        if summary.get("losses"):
            curves[name.split(" (")[0]] = {"cross-entropy on the train answers, all tasks": summary["losses"]}
    return curves


def learning_figure(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], curves.items()):
        for label, losses in series.items():
            ax.plot(range(1, len(losses) + 1), losses, marker="." if len(losses) <= 30 else None, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_html(result: dict, figures: dict[str, Path]) -> str:
    machine = result["machine"]
    speed = machine.get("matmul_gflops")
    provenance = html_table(["what", "value"], [
        ["command", result["command"]], ["code", commit_text(result["code"])],
        ["machine", f"{machine['platform']}, {machine.get('processor') or 'CPU model not recorded'}, "
                    f"{machine['cpus']} CPUs, torch {machine['torch']}" +
                    (f", matrix multiply {speed['float32']} GFLOP/s float32" if speed else "")],
        ["wall time", f"{result['seconds']} s, of which {result['zoo_seconds']} s training or loading the experts"],
        ["per row", ", ".join(f"{name.split(' (')[0]} {s} s" for name, s in result["row_seconds"].items())],
        ["examples per task", json.dumps(result["limits"])], ["experts' recipe", json.dumps(result["recipe"])],
        ["chosen on validation", "; ".join(f"{m}: {c['params']}" for m, c in result["chosen"].items())]])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskfuse LLM benchmark</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }} table {{ border-collapse: collapse; font-size:
0.85em; }} th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; }} img {{ max-width: 100%; }}</style></head>
<body><h1>Merging and composing LoRA experts of {Path(result['base']).name}</h1>
<p>Each task's test questions answered in the chat template: exact match of the greedy answer / likelihood accuracy
over the task's answers (%). The last two columns average each over the tasks, normalised by the task's own expert.
Parameters were chosen on validation.</p>
{html_table(header(result), per_task_cells(result))}
{''.join(html_image(p, n) for n, p in figures.items())}
<h2>Provenance</h2>{provenance}
</body></html>
"""
