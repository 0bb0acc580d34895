"""The routed rows of the routing study, each built from the zoo: Arrow, PHATGOOSE and Multi-Head Routing over the
LoRA adapters, Twin-Merging and EMR-Merging over the full experts."""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..eval.encoder import Encoded, embed_all, encode, load_encoder, load_tokenizer, sentence_embedding
from ..eval.harness import Evaluator, as_dict, mean
from ..routing.arrow import ArrowRouter
from ..routing.calibrated_twin import EXCLUSIVE_SCALES, fit_temperature, scaled_parts, search_part_scales, tempered
from ..routing.emr import task_models
from ..routing.library import LoraLibrary
from ..routing.mhr import adapt, route_mhr, set_task_ids
from ..routing.modules import route
from ..routing.phatgoose import PhatgooseRouter, gate_matrix, train_gates
from ..routing.twin import TwinMerged, exclusive_library, train_router
from ..zoo.build import Zoo
from .merging import merge_zoo

TWIN_SHARED = ("task_arithmetic", {"scale": 0.3})  # the paper's shared expert; λ as the full benchmark chose
# the calibrated row's shared expert: the best data-free merge of the full benchmark, at the scale it chose
CALIBRATED_TWIN_SHARED = ("iso_cts", {"scale": 4.0})
TWIN_RANK = 32  # per linear weight and task: 1/12 of MiniLM's 384 hidden dimensions
PHATGOOSE_TOP_K, PHATGOOSE_STEPS = 2, 100  # the paper's k and gate-training steps
# MHR: 8 head blocks (MiniLM's 384 and 1536 features split evenly; the paper's best few-shot setting has more heads
# than Poly's one); the routing logits move with a lr of 0.1 (they start at 0 and must move by a few units within
# the k-shot budget), the skills, when they learn too, at the zoo's LoRA lr
MHR_HEADS, MHR_ROUTING_LR = 8, 0.1

Report = Callable[[str, int, int, str], None]


def arrow_encoder(zoo: Zoo, library: LoraLibrary, top_k: int) -> nn.Module:
    return route(load_encoder(zoo.base_dir), library,
                 lambda name, updates, module: ArrowRouter.for_updates(updates, module.in_features, top_k))


def phatgoose_encoder(zoo: Zoo, library: LoraLibrary, gates: dict) -> nn.Module:
    return route(load_encoder(zoo.base_dir), library, lambda name, updates, module: PhatgooseRouter(
        gate_matrix(library, gates, name, module.in_features), PHATGOOSE_TOP_K))


def phatgoose_gates(zoo: Zoo, library: LoraLibrary, report: Report) -> tuple[dict, float]:
    """Each adapter's gates, trained on its own task's train split (everything else frozen)."""
    started = time.perf_counter()
    tokenizer = load_tokenizer(zoo.base_dir)
    gates = {}
    for i, task in enumerate(library.experts):
        report("phatgoose gates", i, len(library.experts), task)
        data, head = train_data(zoo, task, tokenizer), zoo.experts[task].head()
        gates[task] = train_gates(lambda: load_encoder(zoo.base_dir), library, task, cycled(data, zoo),
                                  lambda model, ids, mask, labels: nn.functional.cross_entropy(
                                      head(sentence_embedding(model, ids, mask)), labels),
                                  steps=PHATGOOSE_STEPS, seed=zoo.variant.recipe.seed)
    return gates, time.perf_counter() - started


def mhr_adapted(zoo: Zoo, library: LoraLibrary, examples: dict[int, tuple[nn.Linear, Encoded]], steps: int,
                learn_skills: bool) -> nn.Module:
    """The base with MHR over `library`, one routing per task index in `examples` (head, k-shot examples), each
    adapted for `steps` steps on its own examples; the skills learn too if `learn_skills` (then one task only)."""
    recipe = zoo.variant.recipe
    model = route_mhr(load_encoder(zoo.base_dir), library, MHR_HEADS, tasks=len(examples))
    for task, (head, data) in examples.items():
        def loss(m, ids, mask, labels, task=task, head=head):
            set_task_ids(m, torch.full((len(ids),), task))
            return nn.functional.cross_entropy(head(sentence_embedding(m, ids, mask)), labels)

        adapt(model, cycled(data, zoo, min(recipe.batch_size, 16)), loss, steps, MHR_ROUTING_LR,
              recipe.lora_lr if learn_skills else None, seed=recipe.seed)
    set_task_ids(model, None)
    return model.eval()


def cycled(data: Encoded, zoo: Zoo, batch_size: int | None = None):
    generator = torch.Generator().manual_seed(zoo.variant.recipe.seed)
    while True:
        for rows, ids, mask in data.batches(batch_size or zoo.variant.recipe.batch_size,
                                            torch.randperm(len(data.ids), generator=generator).tolist()):
            yield ids, mask, data.labels[rows]


def scored(name: str, row: dict, test: Evaluator, normalized) -> dict:
    scores = row.pop("scores")
    norm = normalized(scores)
    return {"method": name, **row, "test": as_dict(scores), "test_normalized": norm,
            "average": {"accuracy": mean(s.accuracy for s in scores.values()), "normalized": mean(norm.values())}}


def full_states(zoo: Zoo) -> tuple[dict, dict[str, dict], list[str]]:
    """The base's and each full expert's state dicts, and the names of the linear weights."""
    base = load_encoder(zoo.base_dir)
    linear = [f"{n}.weight" for n, m in base.named_modules() if isinstance(m, nn.Linear)]
    experts = {t: load_encoder(e.model_dir).state_dict() for t, e in zoo.experts.items()}
    return base.state_dict(), experts, linear


def twin_merging(zoo: Zoo, validation: Evaluator, test: Evaluator, validation_normalized: Callable[[dict], float],
                 cost: Callable[[nn.Module], dict] | None = None, report: Report | None = None) -> dict[str, dict]:
    """Shared expert: task arithmetic at TWIN_SHARED; exclusive parts at TWIN_RANK. Two rows from one model: the
    paper's, whose router learns from the validation inputs of each task, labelled only by the task they belong to;
    and the same parts served by the task's identity, as EMR-Merging is. A second router, trained on the train
    splits (about four times the inputs), measures whether the first one's errors come from too little data. A
    third row: calibrated_twin (`validation_normalized` scores a model's validation scores)."""
    method, params = TWIN_SHARED
    _, experts, linear = full_states(zoo)
    shared = shared_merge(zoo, method, params)
    tasks = list(zoo.tasks)
    features = torch.cat([embed_all(shared, validation.data[t]) for t in tasks])
    labels = torch.cat([torch.full((len(validation.data[t].ids),), i) for i, t in enumerate(tasks)])
    started = time.perf_counter()
    router = train_router(features, labels, len(tasks), seed=zoo.variant.recipe.seed)
    library = exclusive_library(shared.state_dict(), experts, set(linear), TWIN_RANK, f"{method} {params}")
    model = TwinMerged(shared, library, router)
    prepared = time.perf_counter() - started
    test_features = {t: embed_all(model.encoder, test.data[t]) for t in tasks}
    tokenizer = load_tokenizer(zoo.base_dir)
    train = {t: train_data(zoo, t, tokenizer) for t in tasks}
    more = train_router(torch.cat([embed_all(model.encoder, train[t]) for t in tasks]),
                        torch.cat([torch.full((len(train[t].ids),), i) for i, t in enumerate(tasks)]), len(tasks),
                        seed=zoo.variant.recipe.seed)
    chosen = f"shared {method} {params}, rank {TWIN_RANK}"
    routed = {"chosen": chosen, "scores": test.score(model),
              "router_test_accuracy": routing_accuracy(router, test_features),
              "router_confusion": routing_confusion(router, test_features),
              "router_trained_on_train_splits_test_accuracy": routing_accuracy(more, test_features),
              "seconds_to_prepare": round(prepared, 1), "extra_parameters": library.parameters_count(),
              **({"overhead": cost(model)} if cost else {}),
              "data_seen": "validation inputs of each task, labelled only by task (router); no labels of any task"}
    given = {}
    for i, task in enumerate(tasks):
        model.use_task(i)
        given[task] = test.score_task(model, task)
    model.use_task(0)
    task_given = {"chosen": chosen, "scores": given, "extra_parameters": library.parameters_count(),
                  **({"overhead": cost(model)} if cost else {}),
                  "data_seen": "none; the task's identity picks its exclusive part at inference (as EMR-Merging)"}
    model.use_task(None)
    calibrated = calibrated_twin(zoo, experts, set(linear), train, validation, test, validation_normalized, cost,
                                 report)
    return {"twin_merging": routed, "twin_merging_task_given": task_given, "twin_merging_calibrated": calibrated}


def shared_merge(zoo: Zoo, method: str, params: dict) -> nn.Module:
    with tempfile.TemporaryDirectory(prefix="taskfuse-twin-") as work:
        merge_zoo(zoo, method, params, Path(work) / "shared", seed=zoo.variant.recipe.seed)
        return load_encoder(Path(work) / "shared")


def calibrated_twin(zoo: Zoo, experts: dict[str, dict], linear: set[str], train: dict[str, Encoded],
                    validation: Evaluator, test: Evaluator, validation_normalized: Callable[[dict], float],
                    cost: Callable[[nn.Module], dict] | None = None, report: Report | None = None) -> dict:
    """Twin-Merging calibrated for tasks that share their inputs (routing/calibrated_twin.py): shared expert
    CALIBRATED_TWIN_SHARED, router trained on the train splits' inputs, its temperature fitted on the validation
    inputs, one scale per exclusive part chosen on validation by coordinate ascent, parts taken in the order of how
    often the router sends their own validation inputs to them (the best-routed first)."""
    method, params = CALIBRATED_TWIN_SHARED
    shared, tasks, seed = shared_merge(zoo, method, params), list(zoo.tasks), zoo.variant.recipe.seed
    started = time.perf_counter()
    router = train_router(torch.cat([embed_all(shared, train[t]) for t in tasks]),
                          torch.cat([torch.full((len(train[t].ids),), i) for i, t in enumerate(tasks)]), len(tasks),
                          seed=seed)
    held_out = {t: embed_all(shared, validation.data[t]) for t in tasks}
    temperature, losses = fit_temperature(router, torch.cat(list(held_out.values())), torch.cat(
        [torch.full((len(f),), i) for i, f in enumerate(held_out.values())]))
    library = exclusive_library(shared.state_dict(), experts, linear, TWIN_RANK, f"{method} {params}")
    router = tempered(router, temperature)
    prepared = time.perf_counter() - started
    validation_routing = routing_accuracy(router, held_out)
    order = sorted(range(len(tasks)), key=lambda i: -validation_routing[tasks[i]])
    trials_total = 1 + len(order) * len(EXCLUSIVE_SCALES[1:])

    def validation_score(scales: tuple[float, ...]) -> float:
        if report:
            report("calibrated twin-merging", len(searched), trials_total, "part scales on validation")
        searched.append(scales)
        return validation_normalized(validation.score(scaled_parts(shared, library, router, scales)))

    searched: list[tuple[float, ...]] = []
    started = time.perf_counter()
    scales, trials = search_part_scales(validation_score, order, len(tasks))
    search_seconds = time.perf_counter() - started
    model = scaled_parts(shared, library, router, scales)
    chosen = {t: s for t, s in zip(tasks, scales)}
    kept = ", ".join(f"{t} {s:g}" for t, s in chosen.items() if s) or "none"
    test_features = {t: embed_all(shared, test.data[t]) for t in tasks}
    return {"chosen": f"shared {method} {params}, rank {TWIN_RANK}, T {temperature:g}, parts' λ: {kept}",
            "scores": test.score(model), "temperature": temperature, "temperature_validation_loss": losses,
            "part_scales": chosen, "search_order": [tasks[i] for i in order],
            "router_validation_accuracy": validation_routing,
            "scale_trials": [{"scales": dict(zip(tasks, t["scales"])), "validation_normalized": t["score"]}
                             for t in trials],
            "router_test_accuracy": routing_accuracy(router, test_features),
            "seconds_to_prepare": round(prepared, 1), "seconds_to_search_scales": round(search_seconds, 1),
            "extra_parameters": sum(u.a.numel() + u.b.numel() for per in library.modules.values()
                                    for t, u in per.items() if chosen[t]),
            **({"overhead": cost(model)} if cost else {}),
            "data_seen": "train inputs of each task, labelled only by task (router); validation inputs labelled by "
                         "task (temperature, the order parts are searched in) and validation labels (the parts' "
                         "scales)"}


def routing_accuracy(router: nn.Module, features: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per task, the share of its inputs whose largest router logit is the task's own."""
    return {t: float((router(f).argmax(1) == i).float().mean()) for i, (t, f) in enumerate(features.items())}


def routing_confusion(router: nn.Module, features: dict[str, torch.Tensor], floor: float = 0.05) -> dict:
    """Per task, where its inputs go: the share routed to each task, those under `floor` left out."""
    tasks = list(features)
    out = {}
    for t, f in features.items():
        shares = torch.bincount(router(f).argmax(1), minlength=len(tasks)).float() / len(f)
        out[t] = {tasks[j]: round(float(v), 3) for j, v in enumerate(shares) if v >= floor}
    return out


def train_data(zoo: Zoo, task: str, tokenizer) -> Encoded:
    """The task's train split, tokenized."""
    split = zoo.tasks[task].splits["train"]
    return encode(tokenizer, split.texts, split.labels)


def emr_merging(zoo: Zoo, test: Evaluator) -> dict:
    base, experts, _ = full_states(zoo)
    names = [n for n, v in base.items() if v.dtype.is_floating_point and all(n in e for e in experts.values())]
    models = task_models(base, experts, names)
    encoder = load_encoder(zoo.base_dir)
    scores = {}
    for task, state in models.items():
        encoder.load_state_dict(state)
        scores[task] = test.score_task(encoder, task)
    return {"chosen": "data-free; the task's identity picks its mask and rescaler", "scores": scores,
            "data_seen": "none; needs the task's identity at inference"}
