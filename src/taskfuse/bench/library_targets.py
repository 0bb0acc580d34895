"""Issue 13's targets (LoRA libraries: routed rows on bench-routing, composition for a new task there and on the LLM
benchmark) and issue 15's (causal LMs: the upcycled MoE, the LLM benchmark's time, GGUF inputs' cost)."""
from __future__ import annotations

from .routing_report import MULTITASK_ROWS, NEW_TASK_ROWS
from .target import Target, best_data_free, points, signed


# the routing report's multi-task rows that compose the library per input or per task (task arithmetic over the
# LoRA updates is the static baseline beside them)
ROUTED_ROWS = tuple(k for k in MULTITASK_ROWS if k != "lora_task_arithmetic")
# its new-task rows that compose the library (not the base, the task's own LoRA, or a LoRA trained from scratch)
COMPOSITION_ROWS = tuple(k for k in NEW_TASK_ROWS if k not in ("zero_shot", "kshot_lora", "lora_expert"))


def routing_targets(routing: dict, full: dict, additions: dict | None = None) -> list[Target]:
    """Issue 13's targets on bench-routing, against the best data-free row (best_data_free)."""
    source, summary = "bench-routing", routing["summary"]
    routed = {k: 100 * v for k, v in summary["multitask"].items() if k in ROUTED_ROWS}
    best_name, best = max(routed.items(), key=lambda kv: kv[1])
    worst_name, worst = min(routed.items(), key=lambda kv: kv[1])
    free, free_source = best_data_free(full, additions)
    free_score = 100 * free["average"]["normalized"]
    new = {k: 100 * v for k, v in summary["new_task_average_normalized"].items() if k in COMPOSITION_ROWS}
    wins = {k: summary["beats_zero_shot"][k] for k in new}
    most = max(wins, key=lambda k: (wins[k], new[k]))
    top = max(new, key=new.get)
    kshot, tasks = 100 * summary["new_task_average_normalized"]["kshot_lora"], summary["tasks"]
    return [Target(13, "best routed row ≥ 99 % normalised (all tasks)", f"{best_name} {best:.1f} %",
                   points(best - 99), best >= 99, source),
            Target(13, f"every routed row above the best data-free row ({free['method']}, {free_source})",
                   f"lowest: {worst_name} {worst:.1f} % against {free_score:.1f} %", points(worst - free_score),
                   worst > free_score, source),
            Target(13, f"composition beats zero-shot on ≥ 6 of the {tasks} held-out tasks",
                   f"{most}: {wins[most]} of {tasks}", signed(wins[most] - 6, "tasks", 0), wins[most] >= 6, source),
            Target(13, "composition beats the k-shot LoRA on average (held-out tasks)",
                   f"{top} {new[top]:.1f} %, k-shot LoRA {kshot:.1f} %", points(new[top] - kshot),
                   new[top] > kshot, source)]


def llm_new_task_targets(study: dict) -> list[Target]:
    """Issue 13's k-shot comparison on the LLM benchmark's library: on the mean and, for a row learnt once per
    seed, on how many seeds."""
    summary = study["summary"]
    top = max((k for k in COMPOSITION_ROWS if k in summary), key=lambda k: summary[k]["exact_match"])
    ours, kshot = summary[top], summary["kshot_lora"]
    margin = 100 * (ours["exact_match"] - kshot["exact_match"])
    measured = f"{top} {100 * ours['exact_match']:.1f} %, k-shot LoRA {100 * kshot['exact_match']:.1f} %"
    if "per_seed" in ours:
        ahead = sum(a["exact_match"] > b["exact_match"] for a, b in zip(ours["per_seed"], kshot["per_seed"]))
        measured += f"; ahead on {ahead} of {len(ours['per_seed'])} seeds"
    return [Target(13, "composition beats the k-shot LoRA on average (LLM library, exact match)", measured,
                   points(margin), margin > 0, "llm-new-task")]


def llm_targets(llm: dict, gguf: dict) -> list[Target]:
    """Issue 15's targets: the upcycled MoE, the LLM benchmark's time budget, the cost of GGUF inputs."""
    moe = [(k, 100 * v["exact_match"]) for k, v in llm["summary"].items() if k.startswith("moe")]
    targets = []
    if moe:
        name, score = moe[0]
        targets.append(Target(15, "trained-router MoE ≥ 95 % normalised exact match", f"{name} {score:.1f} %",
                              points(score - 95), score >= 95, "bench-llm"))
    minutes = llm["seconds"] / 60
    targets.append(Target(15, "the whole LLM benchmark ≤ 40 minutes (2-core machine)",
                          f"{minutes:.1f} min, {llm['zoo_seconds'] / 60:.1f} of them the expert zoo",
                          signed(40 - minutes, "min", 1), minutes <= 40, "bench-llm"))
    ratios = {kind: r["total"] for kind, r in gguf["ratio_gguf_to_safetensors"].items()}
    worst = max(ratios.values())
    targets.append(Target(15, "merging GGUF inputs ≤ 2x the same merge from safetensors",
                          ", ".join(f"{kind} {ratio:.2f}x" for kind, ratio in ratios.items()),
                          signed(2 - worst, "x"), worst <= 2, "gguf-input"))
    return targets
