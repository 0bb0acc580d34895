"""Rows of the results table, shared by the console, Markdown, HTML and plots."""
from __future__ import annotations


def ranked_rows(result: dict) -> list[dict]:
    """Reference rows (experts, LoRA experts, zero-shot) then methods by average normalised test accuracy."""
    refs = result["references"]["test"]
    experts = refs["expert"]
    rows = []
    for key, label in (("expert", "experts (one per task)"), ("lora_expert", "LoRA experts (one per task)"),
                       ("zero_shot", "zero-shot (base encoder)")):
        scores = refs[key]
        norm = {t: s["accuracy"] / experts[t]["accuracy"] for t, s in scores.items()}
        rows.append(_row(label, "", scores, norm, reference=True))
    # learned rows (results from before they existed have none) rank with the data-free ones
    methods = sorted(result["methods"] + result.get("learned", []), key=lambda m: -m["average"]["normalized"])
    rows += [_row(_label(m), _params(m["params"]), m["test"], m["test_normalized"]) for m in methods]
    return rows


def _label(method_row: dict) -> str:
    return f"{method_row['method']} (learned)" if method_row.get("kind") == "learned" else method_row["method"]


def _row(label: str, params: str, scores: dict, norm: dict, reference: bool = False) -> dict:
    n = len(scores)
    return {"label": label, "params": params, "reference": reference, "normalized": norm,
            "accuracy": {t: s["accuracy"] for t, s in scores.items()},
            "average_accuracy": sum(s["accuracy"] for s in scores.values()) / n,
            "average_macro_f1": sum(s["macro_f1"] for s in scores.values()) / n,
            "average_normalized": sum(norm.values()) / n}


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def markdown(result: dict) -> str:
    lines = ["| model | chosen on validation (data-free) or learned from | avg accuracy | avg macro-F1 | avg normalized |",
             "|---|---|---|---|---|"]
    for r in ranked_rows(result):
        name = f"*{r['label']}*" if r["reference"] else r["label"]
        lines.append(f"| {name} | {r['params']} | {r['average_accuracy'] * 100:.1f} | "
                     f"{r['average_macro_f1'] * 100:.1f} | {r['average_normalized'] * 100:.1f} |")
    return "\n".join(lines)


def task_markdown(result: dict) -> str:
    lines = ["| task | kind | source (version, licence) | classes | train / val / test | data fingerprint |",
             "|---|---|---|---|---|---|"]
    for t in result["tasks"]:
        sources = "; ".join(f"{s['package']} {s['version']} ({s['licence']})" for s in t["sources"])
        counts = ", ".join(f"{k}: {v}" for k, v in t["classes"].items())
        sizes = " / ".join(str(t["sizes"][s]) for s in ("train", "validation", "test"))
        lines.append(f"| {t['name']} | {t['kind']} | {sources} | {counts} | {sizes} | {data_fingerprint(t)} |")
    return "\n".join(lines)


def data_fingerprint(task_row: dict) -> str:
    """The task data's content hash (12 hex digits) and the day it was frozen: two runs with the same fingerprint
    saw the same texts, labels and splits. Results from before fingerprints were recorded show "not recorded"."""
    if "fingerprint" not in task_row:
        return "not recorded"
    frozen = f", frozen {task_row['frozen_at']}" if task_row.get("frozen_at") else ""
    return f"`{task_row['fingerprint'][:12]}`{frozen}"
