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
from ..routing.emr import task_models
from ..routing.library import LoraLibrary
from ..routing.mhr import adapt, route_mhr, set_task_ids
from ..routing.modules import route
from ..routing.phatgoose import PhatgooseRouter, gate_matrix, train_gates
from ..routing.twin import TwinMerged, exclusive_library, train_router
from ..zoo.build import Zoo
from .merging import merge_zoo

TWIN_SHARED = ("task_arithmetic", {"scale": 0.3})  # the paper's shared expert; λ as the full benchmark chose
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
        split = zoo.tasks[task].splits["train"]
        data, head = encode(tokenizer, split.texts, split.labels), zoo.experts[task].head()
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


def twin_merging(zoo: Zoo, validation: Evaluator, test: Evaluator,
                 cost: Callable[[nn.Module], dict] | None = None) -> dict:
    """Shared expert: task arithmetic at TWIN_SHARED; exclusive parts at TWIN_RANK; the router learns from the
    validation inputs of each task, labelled only by the task they belong to."""
    method, params = TWIN_SHARED
    _, experts, linear = full_states(zoo)
    with tempfile.TemporaryDirectory(prefix="taskfuse-twin-") as work:
        merge_zoo(zoo, method, params, Path(work) / "shared", seed=zoo.variant.recipe.seed)
        shared = load_encoder(Path(work) / "shared")
    tasks = list(zoo.tasks)
    features = torch.cat([embed_all(shared, validation.data[t]) for t in tasks])
    labels = torch.cat([torch.full((len(validation.data[t].ids),), i) for i, t in enumerate(tasks)])
    started = time.perf_counter()
    router = train_router(features, labels, len(tasks), seed=zoo.variant.recipe.seed)
    library = exclusive_library(shared.state_dict(), experts, set(linear), TWIN_RANK, f"{method} {params}")
    model = TwinMerged(shared, library, router)
    prepared = time.perf_counter() - started
    routed_right = {t: float((router(embed_all(model.encoder, test.data[t])).argmax(1) == i).float().mean())
                    for i, t in enumerate(tasks)}
    return {"chosen": f"shared {method} {params}, rank {TWIN_RANK}", "scores": test.score(model),
            "router_test_accuracy": routed_right, "seconds_to_prepare": round(prepared, 1),
            "extra_parameters": library.parameters_count(), **({"overhead": cost(model)} if cost else {}),
            "data_seen": "validation inputs of each task, labelled only by task (router); no labels of any task"}


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
