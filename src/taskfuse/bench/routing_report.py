"""The routing study's report: result.json, results.md, a per-task figure of the new-task rows and report.html."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io.output import staged_output  # noqa: E402
from .report import commit_text, html_image, html_table  # noqa: E402

NEW_TASK_ROWS = {"zero_shot": "base zero-shot", "arrow": "Arrow (no data of the task)",
                 "phatgoose": "PHATGOOSE (no data of the task)",
                 "average": "average of the library (no data)", "lorahub": "LoraHub (k-shot)",
                 "lorahub_tuned": "LoraHub, then fine-tuned (k-shot)",
                 "mhr": "MHR, routing learnt (k-shot)", "mhr_skills": "MHR, routing and skills learnt (k-shot)",
                 "kshot_lora": "LoRA from scratch (k-shot)", "lora_expert": "own LoRA expert (ceiling)"}
MULTITASK_ROWS = {"arrow": "Arrow, all LoRA adapters", "phatgoose": "PHATGOOSE, all LoRA adapters", "lora_task_arithmetic": "task arithmetic over the LoRA updates",
                  "twin_merging": "Twin-Merging (full experts, router on inputs)",
                  "twin_merging_calibrated": "Twin-Merging calibrated (full experts, router on inputs; "
                                             "temperature and each part's scale fitted on validation)",
                  "twin_merging_task_given": "Twin-Merging (full experts, task identity given)",
                  "emr_merging": "EMR-Merging (full experts, task identity given)",
                  "mhr": "MHR, all LoRA adapters (routing learnt per task, task identity given)"}


MULTITASK_HEADER = ["multi-task (all 8 tasks)", "chosen on validation", "avg normalized %", "avg accuracy %",
                    "inference time, extra parameters (× / % of the base)"]


def cost_text(row: dict) -> str:
    cost = row.get("overhead")
    return f"{cost['latency_ratio']:.2f}×, +{cost['extra_parameter_ratio'] * 100:.1f} %" if cost else ""


def multitask_rows(result: dict) -> list[list[str]]:
    rows = [[MULTITASK_ROWS[r["method"]], str(r["chosen"]), f"{r['average']['normalized'] * 100:.1f}",
             f"{r['average']['accuracy'] * 100:.1f}", cost_text(r)] for r in result["multitask"]]
    lora = result["summary"]["lora_experts_normalized"]
    rows.append(["LoRA experts, each on its own task", "", f"{lora * 100:.1f}", "", ""])
    return rows


def new_task_rows(result: dict) -> list[list[str]]:
    tasks = result["new_task"]
    averages = result["summary"].get("new_task_average_normalized", {})
    wins = result["summary"].get("beats_zero_shot", {})
    builtin = result["summary"].get("tasks", len(tasks))  # averages and counts leave users' task files out
    return [[label, f"{averages[key] * 100:.1f}" if key in averages else "",
             f"{wins[key]}/{builtin}" if key in wins else "",
             *(f"{t['accuracy'][key] * 100:.1f}" for t in tasks)] for key, label in NEW_TASK_ROWS.items()]


def new_task_names(result: dict) -> list[str]:
    """Each held-out task's name, a user's task file marked (its library is every built-in adapter)."""
    return [t["task"] + (" (task file)" if t.get("task_file") else "") for t in result["new_task"]]


def markdown(result: dict) -> str:
    def table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])

    tasks = new_task_names(result)
    parts = [table(MULTITASK_HEADER, multitask_rows(result))]
    if tasks:
        parts.append(table(["new task (leave one out)", "avg normalized %", "beats zero-shot",
                            *(f"{t} acc %" for t in tasks)], new_task_rows(result)))
    return "\n\n".join(parts)


def new_task_figure(result: dict, path: Path) -> None:
    tasks = new_task_names(result)
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 3, 5.2))
    width = 0.8 / len(NEW_TASK_ROWS)
    for i, (key, label) in enumerate(NEW_TASK_ROWS.items()):
        ax.bar([j + i * width for j in range(len(tasks))], [t["normalized"][key] * 100 for t in result["new_task"]],
               width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30, ha="right")
    ax.set_ylabel("% of the task's full expert")
    ax.set_title("A task the library never saw: each task held out, the other adapters composed")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.28))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_routing_report(result: dict, out: Path) -> Path:
    with staged_output(Path(out), "report") as stage:
        (stage / "result.json").write_text(json.dumps(result, indent=1))
        (stage / "results.md").write_text(markdown(result) + "\n")
        figures = {}
        if result["new_task"]:
            figures["new_task.png"] = stage / "new_task.png"
            new_task_figure(result, figures["new_task.png"])
        (stage / "report.html").write_text(render_html(result, figures))
    return Path(out)


def render_html(result: dict, figures: dict[str, Path]) -> str:
    tasks = new_task_names(result)
    cost = result["multitask"][0]["overhead"]
    machine = result["machine"]
    provenance = html_table(["what", "value"], [
        ["command", result["command"]], ["code", commit_text(result["code"])], ["zoo variant", result["variant"]],
        ["settings", json.dumps(result["settings"])],
        ["machine", f"{machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}"],
        ["wall time", f"{result['seconds']} s"], ["peak RSS", f"{result['peak_rss_mib']} MiB"],
        ["inference cost", f"each routed model's best of three times to embed the {cost['examples']} test texts of "
                           f"{cost['task']} against the base's {cost['base_seconds']} s; parameters and buffers "
                           "beyond the base's"]])
    new_task = html_table(["new task (leave one out)", "avg normalized %", "beats zero-shot",
                           *(f"{t} acc %" for t in tasks)], new_task_rows(result)) if tasks else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskfuse routing study</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }} table {{ border-collapse: collapse; font-size:
0.85em; }} th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; }} img {{ max-width: 100%; }}</style></head>
<body><h1>Composing the zoo's LoRA adapters ({result['variant']} zoo)</h1>
<p>Multi-task: the whole library serves every task. New task: each task held out in turn, its own adapter removed
from the library (a task from a user's task file is held out from the whole library, and left out of the average
and the count of wins); accuracy on its test split, normalised by its full expert.</p>
{html_table(MULTITASK_HEADER, multitask_rows(result))}
{new_task}
{''.join(html_image(p, n) for n, p in figures.items())}
<h2>Provenance</h2>{provenance}
</body></html>
"""
