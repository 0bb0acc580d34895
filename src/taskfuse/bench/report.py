"""Writing a benchmark's report: result.json, results.md, two PNG figures and a self-contained report.html.

Everything is written to a staging folder that replaces the report folder only when complete.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..io.output import staged_output
from .plots import coefficient_heatmap, normalized_heatmap, scale_curves
from .table import data_fingerprint, markdown, ranked_rows, task_markdown

FIGURES = {"normalized_accuracy.png": normalized_heatmap, "accuracy_vs_scale.png": scale_curves}


def write_report(result: dict, out: Path) -> Path:
    """Write the report folder `out` atomically; a previous report there is replaced, any other folder refused."""
    with staged_output(Path(out), "report") as stage:
        (stage / "result.json").write_text(json.dumps(result, indent=1))
        (stage / "results.md").write_text(f"{markdown(result)}\n\n{task_markdown(result)}\n")
        for name, draw in FIGURES.items():
            draw(result, stage / name)
        figures = {n: stage / n for n in FIGURES}
        for row in result.get("learned", []):
            if "*" not in row.get("coefficients", {"*": None}):  # layer-wise: a layer × task map; task-wise Λ is in the table
                name = f"coefficients_{row['method'].replace(' ', '_')}.png"
                figures[name] = stage / name
                # a row learned over a merge has the merge's coefficient first ("(merge)"), then the experts'
                coefficient_heatmap(row["coefficients"], row.get("models", [t["name"] for t in result["tasks"]]),
                                    f"{row['method']}: learned coefficients", figures[name])
        (stage / "report.html").write_text(render_html(result, figures))
    return Path(out)


def escape_html(value) -> str:
    return html.escape(str(value))


def html_table(header: list[str], rows: list[list], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape_html(h)}</th>" for h in header)
    body = "".join(f"<tr class='{(classes or [''] * len(rows))[i]}'>" + "".join(f"<td>{escape_html(c)}</td>" for c in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _results_table(result: dict) -> str:
    tasks = [t["name"] for t in result["tasks"]]
    rows, classes = [], []
    for r in ranked_rows(result):
        rows.append([r["label"], r["params"], f"{r['average_normalized'] * 100:.1f}",
                     f"{r['average_accuracy'] * 100:.1f}", f"{r['average_macro_f1'] * 100:.1f}",
                     *(f"{r['accuracy'][t] * 100:.1f}" for t in tasks)])
        classes.append("reference" if r["reference"] else "method")
    header = ["model", "chosen on validation", "avg normalized %", "avg accuracy %", "avg macro-F1 %",
              *(f"{t} acc %" for t in tasks)]
    return html_table(header, rows, classes)


def _tasks_table(result: dict) -> str:
    rows = [[t["name"], t["kind"], t["description"],
             "; ".join(f"{s['package']} {s['version']} ({s['licence']})" for s in t["sources"]),
             ", ".join(f"{k}: {v}" for k, v in t["classes"].items()),
             " / ".join(str(t["sizes"][s]) for s in ("train", "validation", "test")),
             data_fingerprint(t).replace("`", "")] for t in result["tasks"]]
    return html_table(["task", "kind", "what", "source package, version, licence", "classes", "train / val / test",
                   "data fingerprint"], rows)


def html_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img alt='{escape_html(alt)}' src='data:image/png;base64,{data}'><figcaption>{escape_html(alt)}</figcaption></figure>"


def commit_text(code: dict | None) -> str:
    if not code or not code.get("commit"):
        return "not recorded (not run from a git checkout)"
    return code["commit"] + (" with uncommitted changes" if code["uncommitted_changes"] else "")


def _learned_text(row: dict) -> str:
    seen = row["data_seen"]
    examples = sum(seen["examples"].values())
    memory = row["memory"]
    if "search" in row["learning"]:  # a black-box search of per-expert weights, scored on validation
        return (f"{row['learning']['paper']}; {row['params']['search']}, {row['params']['budget']} points scored on "
                f"the labelled validation split ({examples} examples over {len(seen['examples'])} tasks) in "
                f"{row['seconds']['search']} s")
    if "statistics" in row["learning"]:  # a closed-form merge from per-model statistics (RegMean, Fisher)
        return (f"{row['learning']['paper']}; {row['params']['statistics']} statistics of {row['params']['data']} "
                f"({examples} examples over {len(seen['examples'])} tasks) in {row['seconds']['statistics']} s, "
                f"merged in {row['seconds']['merge']} s; RSS grew {memory['rss_added_mib']} MiB")
    start = (f"; started from the {row['learning']['over']} merge {row['learning']['over_params']} (the data-free "
             "row best on validation), its coefficient 1 and the experts' 0" if "over" in row["learning"] else "")
    return (f"{row['learning']['paper']}{start}; {row['params']['objective']} on {row['params']['data']} "
            f"({examples} examples over {len(seen['examples'])} tasks), {row['params']['steps']} steps in "
            f"{row['seconds']['learn']} s; holds base {memory['base_mib']} MiB + task vectors "
            f"{memory['task_vectors_mib']} MiB, RSS grew {memory['rss_added_mib']} MiB while learning")


def _replay(row: dict) -> dict:
    """What replays a learned row: its spec (after the spec that writes its start, for a row learned over a merge;
    the start's folder is its first model) and its losses."""
    return {**({"start_spec": row["start_spec"]} if "start_spec" in row else {}), "spec": row["spec"],
            "losses": row.get("losses")}


def render_html(result: dict, figures: dict[str, Path]) -> str:
    machine = result["machine"]
    provenance = html_table(["what", "value"], [
        ["taskfuse", result["taskfuse"]], ["command", result.get("command", "not recorded")],
        ["code", commit_text(result.get("code"))], ["zoo variant", result["variant"]], ["seed", result["seed"]],
        ["training recipe", json.dumps(result["recipe"])], *([f"data used: {k}", v] for k, v in result["data_used"].items()),
        ["machine", f"{machine['platform']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, torch {machine['torch']}"],
        ["wall time", f"zoo {result['seconds']['zoo']} s, total {result['seconds']['total']} s"],
        ["peak RSS", f"{result['peak_rss_mib']} MiB"],
        *([f"learned: {r['method']}", _learned_text(r)] for r in result.get("learned", [])),
        *([f"not benchmarked: {k}", v] for k, v in result["excluded"].items())])
    specs = "".join(f"<details><summary>{escape_html(r['method'])} (learned): spec that replays it, losses</summary><pre>"
                    f"{escape_html(json.dumps(_replay(r), indent=1))}</pre></details>"
                    for r in result.get("learned", []))
    specs += "".join(f"<details><summary>{escape_html(m['method'])}: spec of the chosen merge and every trial</summary><pre>"
                    f"{escape_html(json.dumps({'spec': m['spec'], 'trials': m['trials']}, indent=1))}</pre></details>"
                    for m in result["methods"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskfuse bench: {escape_html(result['variant'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }}
tr.reference td {{ font-style: italic; background: #f4f4f4; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
#results {{ overflow-x: auto; }}
pre {{ font-size: 0.75em; background: #f8f8f8; padding: 0.5em; overflow-x: auto; }}
</style></head>
<body>
<h1>taskfuse offline benchmark ({escape_html(result['variant'])} zoo)</h1>
<p>Encoder: sentence-transformers/all-MiniLM-L6-v2. One expert per task, merged with every data-free method
(each method's parameters chosen on the validation split) and every learned method (coefficients learned from the
validation data the provenance table names); scores on the test split. Normalised accuracy is a
merge's accuracy on a task divided by that task's expert's accuracy.</p>
<h2>Results</h2>
<div id="results">{_results_table(result)}</div>
{''.join(html_image(p, n) for n, p in figures.items())}
<h2>Tasks</h2>
{_tasks_table(result)}
<h2>Provenance</h2>
{provenance}
{specs}
<script>
// Marks the page once every figure has decoded, so a headless browser test can tell the figures render.
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.imagesOk = String(images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0));
}});
</script>
</body></html>
"""
