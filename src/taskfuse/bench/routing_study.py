"""`taskfuse bench --routing`: routed and few-shot composition of the zoo's LoRA experts, on the zoo's tasks and on
tasks the library never saw.

Multi-task (every adapter in the library): Arrow (top-k chosen on validation), task arithmetic over the LoRA
updates (λ chosen on validation), PHATGOOSE, Twin-Merging, EMR-Merging and MHR (routing per task learnt on the task's
train split), beside the LoRA experts each on its own task.
New task (leave one out): for each task, the library is the other adapters; a user's `--task-file` task is only
ever a new task, its library every built-in task's adapter (its experts are trained for the references alone).
Zero-shot; Arrow, PHATGOOSE and the plain average of the library (no data of the new task); LoraHub, LoraHub's
weighted adapter then fine-tuned as the k-shot LoRA is, MHR (routing only, and routing with the skills) and a LoRA
trained from scratch on the same k labelled examples per class of the task's train split; the task's own LoRA expert as the ceiling. Everything is judged on test and normalised by the
task's full expert, as the merge benchmark is.
"""
from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, replace

import torch
from torch import nn

from .. import __version__
from ..eval.encoder import Encoded, embed_all, encode, load_encoder, load_tokenizer
from ..eval.harness import Evaluator, as_dict, mean
from ..routing.library import LoraLibrary
from ..routing.lorahub import LoraHubSearch, search_weights
from ..routing.mhr import mhr_modules, use_task
from ..routing.weighted import WeightedMixture
from ..zoo.build import Zoo, ZooProgress, build_zoo
from ..zoo.recipe import variant_named
from ..zoo.train import fine_tune, peft_quietly, prepare_lora
from .learned import _chosen_rows
from .routing_rows import (CALIBRATED_TWIN_SHARED, MHR_HEADS, MHR_ROUTING_LR, PHATGOOSE_STEPS, PHATGOOSE_TOP_K, TWIN_RANK, TWIN_SHARED,
                           arrow_encoder, emr_merging, mhr_adapted, phatgoose_encoder, phatgoose_gates, scored,
                           train_data, twin_merging)
from .provenance import code_commit, command_line, machine
from .references import reference_scores

ARROW_TOP_K = (1, 2, 3, 4)
NEW_TASK_TOP_K = 3  # PEFT's default: a new task has no validation data to choose k with
TA_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)
SHOTS = 5
KSHOT_STEPS = 40  # LoRA from scratch on the k-shot set: as many optimiser steps as LoraHub has loss evaluations
MHR_MULTITASK_STEPS = 100  # routing steps per task on its train split (multi-task: every task's data is at hand)

Report = Callable[[str, int, int, str], None]


def run_routing(variant: str = "full", progress: Report | None = None, zoo_progress: ZooProgress | None = None,
                task_files: tuple[str, ...] = (), shots: int = SHOTS, lorahub: LoraHubSearch = LoraHubSearch(),
                kshot_steps: int = KSHOT_STEPS, mhr_steps: int = MHR_MULTITASK_STEPS) -> dict:
    started, code = time.perf_counter(), code_commit()
    report = progress or (lambda *a: None)
    zoo, held_out = library_and_held_out(build_zoo(variant_named(variant), 1, zoo_progress, task_files))
    heads = {t: e.head() for t, e in zoo.experts.items()}
    validation, test = Evaluator(zoo.tasks, heads, "validation"), Evaluator(zoo.tasks, heads, "test")
    report("references", 0, 2, "validation")
    val_refs = reference_scores(zoo, validation)
    report("references", 1, 2, "test")
    test_refs = reference_scores(zoo, test)
    library = LoraLibrary.from_adapters(zoo.base_dir, {t: e.lora_dir for t, e in zoo.experts.items()})
    experts = test_refs["expert"]

    def normalized(scores) -> dict:
        return {t: s.accuracy / experts[t].accuracy for t, s in scores.items()}

    def validation_normalized(scores) -> float:
        return mean(s.accuracy / val_refs["expert"][t].accuracy for t, s in scores.items())

    def choose(name: str, grid, build) -> dict:
        trials = []
        for i, value in enumerate(grid):
            report("multi-task", i, len(grid), f"{name} {value}")
            scores = validation.score(build(value))
            trials.append({"value": value, "validation_normalized": validation_normalized(scores)})
        best = max(trials, key=lambda t: t["validation_normalized"])
        scores = test.score(build(best["value"]))
        norm = normalized(scores)
        return {"method": name, "chosen": best["value"], "trials": trials, "test": as_dict(scores),
                "test_normalized": norm, "average": {"accuracy": mean(s.accuracy for s in scores.values()),
                                                     "normalized": mean(norm.values())}}

    mixture = WeightedMixture(load_encoder(zoo.base_dir), library)
    cost = cost_meter(zoo, test)
    multitask = [
        {**choose("arrow", ARROW_TOP_K, lambda k: arrow_encoder(zoo, library, k)), "data_seen": "validation labels "
         "choose top-k only", "overhead": {**cost(arrow_encoder(zoo, library, max(ARROW_TOP_K))),
                                           "top_k": max(ARROW_TOP_K)}},
        {**choose("lora_task_arithmetic", TA_SCALES, lambda s: mixture.set([s] * len(library.experts))),
         "data_seen": "validation labels choose λ only"},
    ]
    gates, gate_seconds = phatgoose_gates(zoo, library, report)
    phatgoose = phatgoose_encoder(zoo, library, gates)
    multitask.append(scored("phatgoose", {"chosen": f"top-{PHATGOOSE_TOP_K}", "scores": test.score(phatgoose),
        "seconds_to_train_gates": round(gate_seconds, 1), "overhead": cost(phatgoose),
        "data_seen": f"each adapter's own train split, {PHATGOOSE_STEPS} steps per adapter (gates only)"},
        test, normalized))
    report("multi-task", 0, 2, "twin-merging")
    multitask += [scored(name, row, test, normalized) for name, row in twin_merging(zoo, validation, test,
                                                                                     validation_normalized, cost,
                                                                                     report).items()]
    report("multi-task", 1, 2, "emr-merging")
    multitask.append(scored("emr_merging", emr_merging(zoo, test), test, normalized))
    report("multi-task", 2, 2, "mhr")
    multitask.append(scored("mhr", mhr_multitask(zoo, library, heads, test, mhr_steps, cost), test, normalized))
    new_task = [leave_one_out(zoo, library, gates, task, test, test_refs, shots, lorahub, kshot_steps, report)
                for task in zoo.tasks] if len(zoo.tasks) > 1 else []
    held_refs = {}
    if held_out.tasks:  # users' tasks: new to the whole library
        held_test = Evaluator(held_out.tasks, {t: e.head() for t, e in held_out.experts.items()}, "test")
        held_refs = reference_scores(held_out, held_test)
        new_task += [{**leave_one_out(held_out, library, gates, task, held_test, held_refs, shots, lorahub,
                                      kshot_steps, report), "task_file": True} for task in held_out.tasks]
    return {"taskfuse": __version__, "variant": variant, "code": code, "command": command_line(),
            "machine": machine(), "library": {"experts": library.experts, "modules": len(library.modules),
                                              "parameters": library.parameters_count()},
            "references": {k: as_dict({**v, **held_refs.get(k, {})}) for k, v in test_refs.items()},
            "multitask": multitask, "new_task": new_task, "summary": summarise(new_task, multitask, test_refs),
            "settings": {"arrow_top_k": ARROW_TOP_K, "twin_shared": TWIN_SHARED, "calibrated_twin_shared": CALIBRATED_TWIN_SHARED, "phatgoose": {"top_k": PHATGOOSE_TOP_K, "steps": PHATGOOSE_STEPS}, "twin_rank": TWIN_RANK,
                         "mhr": {"heads": MHR_HEADS, "routing_lr": MHR_ROUTING_LR},
                         "new_task_top_k": NEW_TASK_TOP_K, "ta_scales": TA_SCALES,
                         "shots_per_class": shots, "lorahub": asdict(lorahub), "kshot_lora_steps": kshot_steps,
                         "mhr_multitask_steps": mhr_steps},
            "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def library_and_held_out(zoo: Zoo) -> tuple[Zoo, Zoo]:
    """The zoo's built-in tasks, whose adapters are the library, and the tasks of users' task files, which are held
    out from all of it: a user's task is the new task the study exists for, and the built-in rows stay comparable
    from run to run."""
    def part(keep: Callable[[str], bool]) -> Zoo:
        return replace(zoo, tasks={n: t for n, t in zoo.tasks.items() if keep(n)},
                       experts={n: e for n, e in zoo.experts.items() if keep(n)})
    return part(lambda name: name in zoo.variant.tasks), part(lambda name: name not in zoo.variant.tasks)


def mhr_multitask(zoo: Zoo, library: LoraLibrary, classifiers: dict, test: Evaluator, steps: int,
                  cost: Callable[[nn.Module], dict]) -> dict:
    """One routing per task over the whole library, each learnt on the task's train split (skills frozen), as
    Poly/MHR learn routing in the multi-task setting, where every task's training data is at hand; at inference the
    task's identity picks its routing."""
    tasks = list(zoo.tasks)
    tokenizer = load_tokenizer(zoo.base_dir)
    examples = {i: (classifiers[t], train_data(zoo, t, tokenizer)) for i, t in enumerate(tasks)}
    model = mhr_adapted(zoo, library, examples, steps, learn_skills=False)
    scores, own = {}, {}
    for i, task in enumerate(tasks):
        use_task(model, i)
        scores[task] = test.score_task(model, task)
        expert = library.experts.index(task)
        own[task] = mean(float(m.mixing(1)[0, :, expert].mean()) for m in mhr_modules(model))
    use_task(model, 0)
    return {"chosen": f"{MHR_HEADS} heads, routing only", "scores": scores, "own_adapter_weight": own,
            "overhead": cost(model),
            "data_seen": f"each task's train split, {steps} steps of routing per task (batches of "
                         f"{min(zoo.variant.recipe.batch_size, 16)}); the task's identity at inference"}


def few_shot(zoo: Zoo, task: str, shots: int) -> Encoded:
    """The first `shots` examples of each class in the task's (already shuffled) train split."""
    split = zoo.tasks[task].splits["train"]
    rows = _chosen_rows(split.labels, shots)
    return encode(load_tokenizer(zoo.base_dir), [split.texts[i] for i in rows], [split.labels[i] for i in rows])


def leave_one_out(zoo: Zoo, library: LoraLibrary, gates: dict, task: str, test: Evaluator, refs: dict, shots: int,
                  how: LoraHubSearch, kshot_steps: int, report: Report) -> dict:
    others = library.without(task)
    head = zoo.experts[task].head()
    expert = refs["expert"][task].accuracy
    report("new task", 0, 5, f"{task}: arrow")
    rows = {"zero_shot": refs["zero_shot"][task].accuracy, "lora_expert": refs["lora_expert"][task].accuracy}
    rows["arrow"] = test.score_task(arrow_encoder(zoo, others, NEW_TASK_TOP_K), task).accuracy
    rows["phatgoose"] = test.score_task(phatgoose_encoder(zoo, others, gates), task).accuracy
    mixture = WeightedMixture(load_encoder(zoo.base_dir), others)
    rows["average"] = test.score_task(mixture.set([1 / len(others.experts)] * len(others.experts)), task).accuracy
    examples = few_shot(zoo, task, shots)

    def loss(weights: list[float]) -> float:
        logits = head(embed_all(mixture.set(weights), examples))
        return float(nn.functional.cross_entropy(logits, examples.labels))

    report("new task", 1, 5, f"{task}: lorahub")
    searched = search_weights(loss, len(others.experts), how)
    rows["lorahub"] = test.score_task(mixture.set(searched.weights), task).accuracy
    report("new task", 2, 5, f"{task}: lorahub, then fine-tuned")
    rows["lorahub_tuned"] = test.score_task(lorahub_tuned(zoo, others, searched.weights, head, examples, kshot_steps),
                                            task).accuracy
    report("new task", 3, 5, f"{task}: MHR")
    rows["mhr"] = test.score_task(mhr_adapted(zoo, others, {0: (head, examples)}, kshot_steps, False), task).accuracy
    rows["mhr_skills"] = test.score_task(mhr_adapted(zoo, others, {0: (head, examples)}, kshot_steps, True),
                                         task).accuracy
    report("new task", 4, 5, f"{task}: k-shot LoRA")
    rows["kshot_lora"] = test.score_task(kshot_lora(zoo, head, examples, kshot_steps), task).accuracy
    report("new task", 5, 5, task)
    return {"task": task, "library": others.experts, "accuracy": rows,
            "normalized": {k: v / expert for k, v in rows.items()}, "expert_accuracy": expert,
            "kshot_examples": len(examples.ids),
            "lorahub": {"weights": dict(zip(others.experts, searched.weights)), "objective": searched.objective,
                        "objective_at_start": searched.objective_at_start, "evaluations": searched.evaluations}}


def kshot_lora(zoo: Zoo, head: nn.Linear, examples: Encoded, steps: int) -> nn.Module:
    """A LoRA of the zoo's recipe trained from scratch on the k-shot examples only, for about `steps` steps."""
    # PEFT draws LoRA's A from the global generator: seed it so the row does not depend on what ran before it.
    torch.manual_seed(zoo.variant.recipe.seed)
    return _kshot_trained(zoo, prepare_lora(load_encoder(zoo.base_dir), zoo.variant.recipe), head, examples, steps)


def lorahub_tuned(zoo: Zoo, library: LoraLibrary, weights: list[float], head: nn.Linear, examples: Encoded,
                  steps: int) -> nn.Module:
    """LoraHub's weighted adapter (`weighted_lora`) trained on the k-shot examples exactly as the k-shot LoRA is:
    the library as that LoRA's start (what `taskfuse route lorahub --finetune-steps` does for causal LMs). Where
    LoraHub kept no adapter, the start is the base and this is the k-shot LoRA."""
    if not any(weights):
        return kshot_lora(zoo, head, examples, steps)
    return _kshot_trained(zoo, weighted_lora(load_encoder(zoo.base_dir), library, weights), head, examples, steps)


def _kshot_trained(zoo: Zoo, model: nn.Module, head: nn.Linear, examples: Encoded, steps: int) -> nn.Module:
    """`model`'s LoRA trained on the k-shot examples with the zoo's LoRA recipe for about `steps` steps, merged."""
    recipe = zoo.variant.recipe
    batch = min(recipe.batch_size, 16)
    epochs = math.ceil(steps / math.ceil(len(examples.ids) / batch))
    fine_tune(model, head, examples, replace(recipe, epochs=epochs, batch_size=batch), recipe.lora_lr)
    with peft_quietly():
        return model.merge_and_unload().eval()


def weighted_lora(encoder: nn.Module, library: LoraLibrary, weights: list[float]) -> nn.Module:
    """Σ wᵢ·ΔWᵢ as one trainable PEFT LoRA per module, exactly: the kept adapters' A stacked, their B side by side
    with wᵢ and each adapter's scaling folded in, so the LoRA's own scaling is 1 (rank = the kept adapters' ranks
    summed; adapters with weight 0 left out)."""
    from peft import LoraConfig, get_peft_model
    kept = [i for i, w in enumerate(weights) if w]
    parts = {m: [(weights[i], library.updates(m)[i]) for i in kept if library.updates(m)[i] is not None]
             for m in library.modules}
    parts = {m: pairs for m, pairs in parts.items() if pairs}
    ranks = {m: sum(u.a.shape[0] for _, u in pairs) for m, pairs in parts.items()}
    config = LoraConfig(r=max(ranks.values()), lora_alpha=max(ranks.values()), rank_pattern=ranks, alpha_pattern=ranks,
                        target_modules=list(parts), lora_dropout=0.0)
    with peft_quietly():
        model = get_peft_model(encoder, config)
    with torch.no_grad():
        for name, pairs in parts.items():
            layer = model.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(torch.cat([u.a for _, u in pairs]))
            layer.lora_B["default"].weight.copy_(torch.cat([w * u.b for w, u in pairs], dim=1))
    return model


def cost_meter(zoo: Zoo, test: Evaluator, repeats: int = 3) -> Callable[[nn.Module], dict]:
    """A function giving a routed model's inference cost against the base: seconds to embed one task's test split
    (best of `repeats`, same threads) and the parameters and buffers it holds beyond the base's."""
    task = next(iter(zoo.tasks))
    data = test.data[task]

    @torch.no_grad()
    def best_time(model: nn.Module) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            embed_all(model, data)
            times.append(time.perf_counter() - start)
        return min(times)

    def size(model: nn.Module) -> int:
        return sum(t.numel() for t in (*model.parameters(), *model.buffers()))

    base = load_encoder(zoo.base_dir)
    base_seconds, base_size = best_time(base), size(base)

    def measure(model: nn.Module) -> dict:
        seconds, extra = best_time(model), size(model) - base_size
        return {"task": task, "examples": len(data.ids), "base_seconds": round(base_seconds, 3),
                "routed_seconds": round(seconds, 3), "latency_ratio": round(seconds / base_seconds, 2),
                "extra_parameters": extra, "extra_parameter_ratio": round(extra / base_size, 4)}
    return measure


def summarise(new_task: list[dict], multitask: list[dict], refs: dict) -> dict:
    lora = mean(s.accuracy / refs["expert"][t].accuracy for t, s in refs["lora_expert"].items())
    out = {"multitask": {r["method"]: r["average"]["normalized"] for r in multitask},
           "lora_experts_normalized": lora}
    builtin = [r for r in new_task if not r.get("task_file")]  # the averages and counts are the built-in tasks'
    if builtin:
        methods = list(builtin[0]["normalized"])
        out["new_task_average_normalized"] = {m: mean(r["normalized"][m] for r in builtin) for m in methods}
        out["beats_zero_shot"] = {m: sum(r["accuracy"][m] > r["accuracy"]["zero_shot"] for r in builtin)
                                  for m in ("arrow", "phatgoose", "average", "lorahub", "lorahub_tuned", "mhr", "mhr_skills",
                                            "kshot_lora")}
        out["tasks"] = len(builtin)
    files = [r for r in new_task if r.get("task_file")]
    if files:
        out["task_file_normalized"] = {r["task"]: r["normalized"] for r in files}
    return out
