"""Learning the coefficients of a user's spec: a base causal LM and its fine-tunes, one JSONL of text per model.

The models are loaded with transformers once each to take their task vectors, then dropped: only the base and
the T task vectors stay in memory, as in the benchmark's view. The loop's gradient step is the memory-lean one
(programs/recomputed_step.py) unless the caller asks for the merged-once step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import IncompatibleInputsError, SpecError, TaskDataError, UsageError
from ..io.checkpoint import Checkpoint
from ..spec.model import MergeSpec
from .learn import LearnProgress, Recipe
from .learning_loop import DEFAULT_STEP, learn_coefficients
from .merge_view import MergeView, Parameterization
from .sparsified_vectors import sparsified_vectors
from .sparsify import ties_vectors
from .text_data import language_model_batches, read_examples


@dataclass(frozen=True)
class SpecLearning:
    parameterization: Parameterization
    recipe: Recipe
    init: float
    ties_density: float | None = None
    batch_size: int = 8
    seed: int = 0
    # a merge of the spec's models to learn from (`taskfuse merge` output): its task vector enters first at 1, the
    # models' at 0, so step 0 is that merge; the spec that replays the result names it as its first model
    start: str | None = None
    # the gradient step (programs/learning_loop.py STEPS): the memory-lean one, or "merged-once" (faster, and
    # holds θ(Λ)'s gradient and every layer's activations of a batch)
    step: str = DEFAULT_STEP
    # (method, params): learn over the vectors as that registered delta method pre-processes them
    # (programs/sparsified_vectors.py); the replay spec is then that method with the learned weights
    sparsify: tuple[str, dict] | None = None


@dataclass
class SpecLearned:
    view: MergeView
    losses: list[float]
    seconds: float
    data_seen: list[dict]


def check_spec_for_learning(spec: MergeSpec, data_files: list[str]) -> None:
    if spec.base is None:
        raise SpecError("learning coefficients needs `base` in the spec: they scale task vectors (model − base).")
    if len(data_files) != len(spec.models):
        named = ", ".join(m.path for m in spec.models)
        raise TaskDataError(f"the spec names {len(spec.models)} models ({named}) but {len(data_files)} --data file(s) "
                            "were given. Fix: one --data JSONL per model, in the spec's order.")
    for f in data_files:
        if not Path(f).is_file():
            raise TaskDataError(f"task data {f} does not exist. Fix: give a JSONL file of {{\"text\": ...}} lines.")


def task_vector(model: Checkpoint, theta0: dict[str, torch.Tensor], label: str) -> dict[str, torch.Tensor]:
    """θ_t − θ₀ in float32 for every base parameter the model holds; a tensor of another shape is refused, naming
    `label` (the model as the user gave it) and the tensor."""
    vector = {}
    for name in theta0:
        if name in model.tensors:
            weights = model.read(name)
            if weights.shape != theta0[name].shape:
                raise IncompatibleInputsError(
                    f"{label}: tensor {name} has shape {tuple(weights.shape)}, the base's {tuple(theta0[name].shape)}. "
                    "Fix: learn over models fine-tuned from this base (same architecture and vocabulary), or align "
                    "the vocabularies first (taskfuse merge with tokenizer_from).")
            vector[name] = weights.float() - theta0[name]
    return vector


def view_over_merge(base, start: dict[str, torch.Tensor], vectors: list[dict[str, torch.Tensor]],
                    parameterization) -> MergeView:
    """θ(Λ) = θ₀ + Λ₀ ⊙ τ_start + Σ_t Λ_t ⊙ τ_t at Λ₀ = 1 and Λ_t = 0: step 0 is the start merge itself, and the
    learning takes more or less of it and of each model's own vector from there (bench/learned_over_merge.py)."""
    view = MergeView(base, [start, *vectors], parameterization, init=0.0)
    with torch.no_grad():
        view.coefficients[0] = 1.0
    return view


def learn_for_spec(spec: MergeSpec, data_files: list[str], how: SpecLearning,
                   progress: LearnProgress | None = None) -> SpecLearned:
    """Fit Λ for the spec's models, each on its own task's text (with `how.start`, the start merge's Λ first)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_spec_for_learning(spec, data_files)
    if how.start is not None and how.ties_density is not None:
        raise UsageError("a start merge cannot be TIES-trimmed with the models' task vectors: the replayed TIES "
                         "merge would trim it again. Fix: start from the merge with atlas or adamerging_layer, or "
                         "use adamerging_layer_ties without --start.")
    if how.start is not None and how.sparsify is not None:
        raise UsageError(f"a start merge cannot be pre-processed by {how.sparsify[0]} with the models' task vectors: "
                         "the replayed merge would pre-process it again. Fix: drop --start or --sparsify.")
    tokenizer = AutoTokenizer.from_pretrained(spec.base)
    labelled = how.recipe.objective == "cross_entropy"
    examples = [read_examples(f, tokenizer, labelled) for f in data_files]
    base = AutoModelForCausalLM.from_pretrained(spec.base, dtype=torch.float32).eval()
    theta0 = {n: p.detach() for n, p in base.named_parameters()}
    # each model through taskfuse's own reader, one tensor at a time: a safetensors or .bin folder, a GGUF file or a
    # PEFT adapter (`BASE+ADAPTER`, its W + scaling·B·A), as in a merge
    vectors = [task_vector(Checkpoint.open(entry.path), theta0, f"model {entry.path}") for entry in spec.models]
    if how.ties_density is not None:
        vectors = ties_vectors(vectors, how.ties_density)
    if how.sparsify is not None:  # keyed on the merge's seed, as the replayed merge draws
        vectors = sparsified_vectors(vectors, *how.sparsify, seed=spec.seed, bases=theta0)
    if how.start is None:
        view = MergeView(base, vectors, how.parameterization, how.init)
    else:
        start = task_vector(Checkpoint.open(how.start), theta0, f"start merge {how.start}")
        view = view_over_merge(base, start, vectors, how.parameterization)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    tasks = {entry.path: language_model_batches(ex, how.batch_size, how.seed + i, pad)
             for i, (entry, ex) in enumerate(zip(spec.models, examples))}
    torch.manual_seed(how.seed)
    started = time.perf_counter()
    losses = learn_coefficients(view, tasks, how.recipe, progress, step=how.step)
    return SpecLearned(view, losses, time.perf_counter() - started, [ex.describe(labelled) for ex in examples])
