"""The measured targets the composition issues set (12: learned merging, 13: LoRA libraries, 15: causal LMs),
each read from the committed result file that measures it: what was asked, what the last committed run measured,
and whether, by how much, it is met. README's status table is generated from here, so "met" can only come from a
result that anyone can remake with the command that result records. Issue 12's targets are judged here (with the
studies that qualify the best learned row's verdict); 13's and 15's in library_targets.py.

A target a committed result cannot judge (a row it predates) is reported as not measured, never as met."""
from __future__ import annotations

import json
from pathlib import Path

from .library_targets import llm_new_task_targets, llm_targets, routing_targets
from .target import Target, best_data_free, best_row, points, signed


def _normalized(rows: list[dict], name: str) -> float | None:
    """A bench-full row's average normalised test accuracy in %, None where the run has no such row."""
    found = [r["average"]["normalized"] for r in rows if r["method"] == name]
    return 100 * found[0] if found else None


def _learning_minutes(row: dict) -> float:
    """A learned row's own cost: learning (or statistics, or search) and writing its merge, as the row timed it."""
    return sum(row["seconds"].values()) / 60


def seed_note(spread: dict | None, full: dict, method: str) -> str:
    """What the learning-seed study (benchmarks/learning_seed_spread.py) adds to a verdict judged from one run: the
    row's average and how many of its seeds reach the target, when the study learned that row of this bench-full run
    (its seed 0 set beside this run's score of the row: a rerun of bench-full that reproduces it keeps the study).
    The verdict stays bench-full's own."""
    row = _normalized(full.get("learned", []), method)
    if spread is None or spread.get("method") != method or not spread.get("bench_full") or row is None \
            or 100 * spread["bench_full"]["normalized"] != row:
        return ""
    summary = spread["summary"]
    return (f"; over {summary['normalized']['n']} learning seeds (learning-seed-spread) "
            f"{100 * summary['normalized']['mean']:.2f} % on average, {summary['seeds_reaching']} of "
            f"{summary['normalized']['n']} reach it")


def partitions_note(partitions: dict | None, best: dict) -> str:
    """What the aTLAS×K study (benchmarks/partitions_over_merge.py) adds beside the best learned row: the same row
    learned with K coefficients per tensor, when the study learned it over this bench-full run's start (its
    per-tensor reference is this row's score). The verdict stays bench-full's own."""
    if partitions is None or not partitions.get("per_tensor") \
            or partitions["per_tensor"]["bench_full"] != best["average"]["normalized"]:
        return ""
    rows = [r for r in partitions["rows"] if r["method"].replace(f"×{r['partitions']}", "", 1) == best["method"]]
    if not rows:
        return ""
    told = ", ".join(f"K = {r['partitions']} {100 * r['average']['normalized']:.2f} %" for r in rows)
    return f"; with K coefficients per tensor (partitions-over-merge, one run each) {told}"


def tail_averaged_row(study: dict | None, full: dict, cv: dict | None = None) -> dict | None:
    """The tail-averaged study's row (benchmarks/tail_averaged_over_merge.py) as the mean of its seeds, where it was
    learned as this bench-full run's row: its start scored as this run's row of the same method and parameters, its
    seed 0's last iterate as this run's learned row. "chosen": whether cross-validation on validation (`cv`,
    benchmarks/tail_average_cross_validated.py, of the same procedure: cross_validated) prefers the average to the
    last iterate; only then does it count as a learned row. Validation in-sample cannot choose it (the coefficients
    are fitted to it), the training split (the study's own judge) rewards staying close to the experts that fitted
    it, and a choice that only test would make is not taken: both are told, neither chooses."""
    if study is None or not study.get("bench_full"):
        return None
    rows = {r["method"]: r for r in full["methods"] + full.get("learned", [])}
    start, learned = rows.get(study["over"]), rows.get(study["method"])
    seed0 = next((r for r in study["rows"] if r["seed"] == 0), None)
    summary = study["summary"]
    if start is None or learned is None or seed0 is None or start.get("params") != study["over_params"] \
            or start["average"]["normalized"] != study["start"]["test"]["average"]["normalized"] \
            or seed0["last"]["test"]["average"]["normalized"] != learned["average"]["normalized"]:
        return None
    gain = {split: summary[split]["averaged"]["mean"] - summary[split]["last"]["mean"]
            for split in ("validation", summary["judge"]["split"])}
    chosen_by = cross_validated(cv, study, learned)
    return {"method": f"{study['method']}, tail-averaged", "seeds": summary["test"]["averaged"]["n"],
            "average": {"normalized": summary["test"]["averaged"]["mean"]}, "bench_full_row": learned,
            "reaching": summary["test"]["seeds_reaching"]["averaged"], "validation_gain": gain["validation"],
            "judge": summary["judge"]["split"], "judge_gain": gain[summary["judge"]["split"]],
            "cross_validation": chosen_by, "chosen": bool(chosen_by and chosen_by["prefers_average"])}


def cross_validated(cv: dict | None, study: dict, learned: dict) -> dict | None:
    """The cross-validation study's verdict where it cross-validated the tail study's procedure: the same method,
    start and fraction, on the full zoo, at the steps, rate and learning seed of bench-full's row (`learned`)."""
    recipe = learned.get("learning", {}).get("recipe", {})
    if cv is None or cv["variant"] != "full" or cv["seed"] != 0 \
            or any(cv[key] != study[key] for key in ("method", "over", "over_params", "fraction")) \
            or (cv["steps"], cv["lr"]) != (recipe.get("steps"), recipe.get("lr")):
        return None
    verdict = cv["summary"]
    return {"folds": cv["folds"], "gain": verdict["gain_of_averaging"], "prefers_average": verdict["prefers_average"],
            "folds_preferring_average": verdict["folds_preferring_average"]}


def _judged(averaged: dict) -> str:
    """How cross-validation, the training split and validation in-sample scored the average against the last
    iterate, in words."""
    cv = averaged["cross_validation"]
    chose = ("no cross-validation of the choice" if cv is None else
             f"{cv['folds']}-fold cross-validation on validation {points(100 * cv['gain'])} pooled over the held-out "
             f"folds, the average preferred in {cv['folds_preferring_average']} of {cv['folds']}")
    return (f"{chose}; the {averaged['judge']} split, which the experts fitted, "
            f"{points(100 * averaged['judge_gain'])}; "
            f"validation in-sample, which the coefficients are fitted to, {points(100 * averaged['validation_gain'])}")


def tail_note(averaged: dict | None) -> str:
    """What the tail-averaged study adds beside the verdict where cross-validation does not choose the average."""
    if averaged is None or averaged["chosen"]:
        return ""
    return (f"; with its coefficients averaged over the last half of the steps (tail-averaged-over-merge) "
            f"{100 * averaged['average']['normalized']:.2f} % on average, {averaged['reaching']} of "
            f"{averaged['seeds']} reach it, but not chosen ({_judged(averaged)})")


def learned_targets(full: dict, spread: dict | None = None, partitions: dict | None = None,
                    additions: dict | None = None, tail: dict | None = None, cv: dict | None = None) -> list[Target]:
    """Issue 12's accuracy and time targets on bench-full (the full encoder benchmark); `spread`, the learning-seed
    study's result, `partitions`, the aTLAS×K study's, and `additions`, the data-free methods registered since,
    where there are; `tail`, the tail-averaged study's, which counts as the best learned row where it is one of
    this run's, `cv` (its cross-validation) chooses it (tail_averaged_row) and it beats the run's own."""
    data_free, learned = full["methods"], full.get("learned", [])
    rows, source = data_free + learned, "bench-full"
    ta, ada = _normalized(rows, "task_arithmetic"), _normalized(rows, "adamerging_layer")
    asked = "layer-wise AdaMerging ≥ task arithmetic + 5 points (normalised)"
    targets = [Target(12, asked, f"adamerging_layer {ada:.1f} %, task_arithmetic {ta:.1f} %", points(ada - ta - 5),
                      ada - ta >= 5, source)
               if ada is not None and ta is not None else Target(12, asked, "no such row", "", None, source)]
    atlas = [(r["method"], 100 * r["average"]["normalized"]) for r in learned
             if r["method"].split(" ")[0] == "atlas"]  # aTLAS with validation labels, from the base or from a merge
    asked = "aTLAS with validation labels ≥ 98 % normalised"
    if atlas:
        name, best = max(atlas, key=lambda a: a[1])
        targets.append(Target(12, asked, f"{name} {best:.2f} %", points(best - 98), best >= 98, source))
    else:
        targets.append(Target(12, asked, "no aTLAS row", "", None, source))
    if learned:
        (best_free, free_source), best_learned = best_data_free(full, additions), best_row(learned)
        averaged = tail_averaged_row(tail, full, cv)
        free = (f"{best_free['method']} {100 * best_free['average']['normalized']:.2f} %"
                + ("" if free_source == source else f" ({free_source})"))
        if averaged is not None and averaged["chosen"] \
                and averaged["average"]["normalized"] > best_learned["average"]["normalized"]:
            best, where = averaged, "tail-averaged-over-merge"
            measured = (f"{averaged['method']} {100 * averaged['average']['normalized']:.2f} % on average over "
                        f"{averaged['seeds']} learning seeds (bench-full's run of it, last iterate: "
                        f"{100 * averaged['bench_full_row']['average']['normalized']:.2f} %; chosen by "
                        f"{_judged(averaged)}), {free}")
        else:
            best, where = best_learned, source
            measured = (f"{best_learned['method']} {100 * best_learned['average']['normalized']:.2f} %, {free}"
                        + seed_note(spread, full, best_learned["method"]) + partitions_note(partitions, best_learned)
                        + (tail_note(averaged) if averaged and averaged["bench_full_row"] is best_learned else ""))
        gap = 100 * (best["average"]["normalized"] - best_free["average"]["normalized"])
        targets.append(Target(12, "best learned row ≥ best data-free row + 2 points", measured, points(gap - 2),
                              gap >= 2, where))
        slowest = max(learned, key=_learning_minutes)
        minutes = _learning_minutes(slowest)
        targets.append(Target(12, "each learned method ≤ 10 minutes on the 2-core machine",
                              f"slowest: {slowest['method']} {minutes:.1f} min", signed(10 - minutes, "min", 1),
                              minutes <= 10, source))
    return targets


def learning_memory_targets(memory: dict) -> list[Target]:
    """Issue 12's memory bound, on learning-memory: each learned row in a process of its own, its RSS growth over
    the whole learning (loading the experts, building the view, the loop) against 1.2 × (base + task vectors +
    one batch's saved activations), all measured by that run; judged for each gradient step the run measured (a
    result without steps measured merged-once, the benchmark rows' step then)."""
    steps: dict[str, list[dict]] = {}
    for r in memory["rows"]:
        steps.setdefault(r.get("step", "merged-once"), []).append(r)
    return [_memory_target(step, rows) for step, rows in steps.items()]


STEP_WORDS = {"merged-once": "the merged-once step (θ merged once per step; `taskfuse learn --step merged-once`)",
              "recomputed": "the recomputed step the benchmark's rows and `taskfuse learn` learn with "
                            "(programs/recomputed_step.py)"}


def _memory_target(step: str, rows: list[dict]) -> Target:
    ratio = {r["method"]: r["rss_added_mib"] / r["bound_mib"] for r in rows}
    loop = {r["method"]: r["loop_rss_added_mib"] / r["bound_mib"] for r in rows}
    within = sum(r["within"] for r in rows)
    worst = max(ratio, key=ratio.get)
    return Target(12, "memory while learning ≤ base + task vectors + one batch + 20 % (each row in its own process), "
                  f"{STEP_WORDS.get(step, step)}",
                  f"{within} of {len(rows)} rows within; most: {worst} at {ratio[worst]:.2f}x the bound "
                  f"(its loop alone {loop[worst]:.2f}x)", signed(within - len(rows), "rows", 0),
                  within == len(rows), "learning-memory")


def side_by_side_targets(side: dict) -> list[Target]:
    """Issue 12: on the benchmark's experts, accuracy at least FusionBench's, wall time and memory lower."""
    targets = []
    for row in side["rows"]:
        ours, theirs = row["taskfuse"], row["fusionbench"]
        accuracy = 100 * (ours["test_normalized"] - theirs["test_normalized"])
        time, memory = ours["seconds"] / theirs["seconds"], ours["peak_rss_mib"] / theirs["peak_rss_mib"]
        short = [what for what, ok in (("accuracy", accuracy >= 0), ("time", time < 1), ("memory", memory < 1))
                 if not ok]
        targets.append(Target(12, f"{row['method']}: accuracy ≥ FusionBench's, time and memory lower",
                              f"{points(accuracy)}, {time:.2f}x the time, {memory:.2f}x the memory",
                              "met" if not short else "short on " + ", ".join(short), not short,
                              "fusionbench-side-by-side"))
    return targets


def all_targets(results: Path) -> list[Target]:
    """Every target, from the committed results under `results` (benchmarks/results/)."""
    read = lambda name: json.loads((results / name / "result.json").read_text())  # noqa: E731
    full = read("bench-full")
    optional = lambda name: read(name) if (results / name / "result.json").exists() else None  # noqa: E731
    additions = optional("data-free-additions")
    return [*learned_targets(full, optional("learning-seed-spread"), optional("partitions-over-merge"), additions,
                             optional("tail-averaged-over-merge"), optional("tail-average-cross-validated")),
            *learning_memory_targets(read("learning-memory")),
            *side_by_side_targets(read("fusionbench-side-by-side")),
            *routing_targets(read("bench-routing"), full, additions), *llm_new_task_targets(read("llm-new-task")),
            *llm_targets(read("bench-llm"), read("gguf-input"))]
